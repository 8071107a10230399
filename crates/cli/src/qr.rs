//! QR codes of a client's config: on the terminal (two rows of modules per line) and as a PNG
//! image. The config holds a private key, so the image is written 0600, atomically.

use std::path::Path;

use anyhow::Context;
use qrcode::{Color, QrCode};

/// Pixels per module, and modules of white border, in the PNG.
const SCALE: usize = 8;
const BORDER: usize = 4;

fn code(text: &str) -> anyhow::Result<QrCode> {
    QrCode::new(text.as_bytes()).context("the config does not fit in a QR code")
}

/// The code drawn with Unicode half blocks, dark on light, with its quiet zone.
pub fn terminal(text: &str) -> anyhow::Result<String> {
    Ok(code(text)?
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Writes the code as a grayscale PNG to `path` (mode 0600).
pub fn write_png(text: &str, path: &Path) -> anyhow::Result<()> {
    let code = code(text)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * BORDER) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, c) in colors.iter().enumerate() {
        if *c == Color::Dark {
            let (x, y) = (i % modules + BORDER, i / modules + BORDER);
            for dy in 0..SCALE {
                let row = (y * SCALE + dy) * side;
                pixels[row + x * SCALE..row + (x + 1) * SCALE].fill(0);
            }
        }
    }
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, side as u32, side as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
    }
    gatehouse_common::files::write_private(path, &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_png_decodes_to_exactly_the_config_and_is_private() {
        let text = "[Interface]\nPrivateKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\
                    Address = 10.60.0.5/32, fd12::5/128\n\n[Peer]\nPublicKey = \
                    //////////////////////////////////////////8=\nEndpoint = hub.example.com:51820\n\
                    AllowedIPs = 10.60.0.0/24, fd12::/64\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phone.png");
        write_png(text, &path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let out = std::process::Command::new("zbarimg")
            .args(["--quiet", "--raw", "-Sbinary"])
            .arg(&path)
            .output()
            .expect("zbarimg (Debian package zbar-tools) must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), text);
        let drawn = terminal(text).unwrap();
        assert!(drawn.lines().count() > 20, "{drawn}");
    }
}
