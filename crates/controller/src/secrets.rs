//! Secrets at rest and one-time credentials: the master key that seals stored secrets
//! (AES-256-GCM), random ids, and tokens that are stored only as SHA-256 hashes.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// A failure with the master key or with sealed data.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the master key {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the master key {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the master key {path} must hold 64 hex characters (32 bytes); it holds something else"
    )]
    Malformed { path: PathBuf },
    #[error("the master key {path} is readable by group or others (mode {mode:o}): chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("a sealed secret ({what}) cannot be opened: wrong master key, or the data is damaged")]
    Open { what: String },
}

/// The key that seals secrets at rest. Its `Debug` never shows it.
pub struct MasterKey(LessSafeKey);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

const SEALED_PREFIX: &str = "v1:";

impl MasterKey {
    fn from_bytes(bytes: &[u8; 32]) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte key fits AES-256");
        Self(LessSafeKey::new(key))
    }

    /// Loads the master key: from `$CREDENTIALS_DIRECTORY/master-key` when systemd passes one,
    /// else from `path`, which is created (0600) with a fresh random key on first start.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let cred = Path::new(&dir).join("master-key");
            if cred.exists() {
                return Self::read(&cred, false);
            }
        }
        match Self::read(path, true) {
            Err(SecretError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Self::create(path)
            }
            other => other,
        }
    }

    fn read(path: &Path, check_mode: bool) -> Result<Self, SecretError> {
        use std::os::unix::fs::PermissionsExt;
        let read_err = |source| SecretError::Read {
            path: path.to_owned(),
            source,
        };
        if check_mode {
            let mode = std::fs::metadata(path)
                .map_err(read_err)?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(SecretError::Permissions {
                    path: path.to_owned(),
                    mode: mode & 0o777,
                });
            }
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let bytes = hex::decode(text.trim()).map_err(|_| SecretError::Malformed {
            path: path.to_owned(),
        })?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SecretError::Malformed {
            path: path.to_owned(),
        })?;
        Ok(Self::from_bytes(&bytes))
    }

    fn create(path: &Path) -> Result<Self, SecretError> {
        let create_err = |source| SecretError::Create {
            path: path.to_owned(),
            source,
        };
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).expect("the system RNG works");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(create_err)?;
        }
        // create_new: two controllers racing on first start cannot both write a key.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(create_err)?;
        writeln!(file, "{}", hex::encode(bytes)).map_err(create_err)?;
        file.sync_all().map_err(create_err)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A key for tests.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).expect("the system RNG works");
        Self::from_bytes(&bytes)
    }

    /// Seals `plain`; `what` names the secret and is bound to it, so a sealed value cannot be
    /// moved to another name.
    pub fn seal(&self, what: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system RNG works");
        let mut data = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(what.as_bytes()),
                &mut data,
            )
            .expect("sealing in memory cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{SEALED_PREFIX}{}", B64.encode(out))
    }

    /// Opens what [`seal`](Self::seal) produced under the same `what`.
    pub fn open(&self, what: &str, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let fail = || SecretError::Open {
            what: what.to_owned(),
        };
        let body = sealed.strip_prefix(SEALED_PREFIX).ok_or_else(fail)?;
        let mut data = B64.decode(body).map_err(|_| fail())?;
        if data.len() < NONCE_LEN {
            return Err(fail());
        }
        let nonce: [u8; NONCE_LEN] = data[..NONCE_LEN].try_into().expect("length checked");
        let plain = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(what.as_bytes()),
                &mut data[NONCE_LEN..],
            )
            .map_err(|_| fail())?;
        Ok(plain.to_vec())
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// `N` random bytes from the system RNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system RNG works");
    bytes
}

/// A random string of `len` characters from `[a-z0-9]`.
pub fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        aws_lc_rs::rand::fill(&mut buf).expect("the system RNG works");
        // 252 = 7 * 36: rejecting larger bytes keeps every character equally likely.
        for b in buf.iter().filter(|b| **b < 252) {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[usize::from(*b % 36)] as char);
        }
    }
    out
}

/// A token that does not have the shape gatehouse prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed token: expected {prefix}_<10 characters>.<32 characters> (as printed when it was \
     created)"
)]
pub struct MalformedToken {
    pub prefix: &'static str,
}

/// A bearer credential: `<prefix>_<id>.<secret>`. The id is public (shown in listings); only
/// the secret's hash is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    secret: String,
    prefix: &'static str,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}_{}.***)", self.prefix, self.id)
    }
}

/// The prefix of join tokens.
pub const JOIN_PREFIX: &str = "ghj";
/// The prefix of admin API tokens.
pub const API_PREFIX: &str = "gha";

impl Token {
    const ID_LEN: usize = 10;
    const SECRET_LEN: usize = 32;

    /// A fresh random token.
    pub fn generate(prefix: &'static str) -> Self {
        Self {
            id: random_id(Self::ID_LEN),
            secret: random_id(Self::SECRET_LEN),
            prefix,
        }
    }

    /// Parses a token as the user pasted it. The message says what shape was expected.
    pub fn parse(prefix: &'static str, text: &str) -> Result<Self, MalformedToken> {
        let shape = || MalformedToken { prefix };
        let rest = text
            .trim()
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('_'))
            .ok_or_else(shape)?;
        let (id, secret) = rest.split_once('.').ok_or_else(shape)?;
        let ok = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        if !ok(id, Self::ID_LEN) || !ok(secret, Self::SECRET_LEN) {
            return Err(shape());
        }
        Ok(Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
            prefix,
        })
    }

    /// The hash that is stored.
    pub fn secret_hash(&self) -> String {
        sha256_hex(self.secret.as_bytes())
    }

    /// Whether this token's secret matches a stored hash (constant time).
    pub fn matches(&self, stored_hash: &str) -> bool {
        let mine = self.secret_hash();
        mine.len() == stored_hash.len()
            && mine
                .bytes()
                .zip(stored_hash.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// The whole token, to show once.
    pub fn reveal(&self) -> String {
        format!("{}_{}.{}", self.prefix, self.id, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_binding() {
        let key = MasterKey::random();
        let sealed = key.seal("ca-key", b"secret bytes");
        assert!(!sealed.contains("secret"));
        assert_eq!(key.open("ca-key", &sealed).unwrap(), b"secret bytes");
        assert!(key.open("other-name", &sealed).is_err());
        assert!(MasterKey::random().open("ca-key", &sealed).is_err());
        assert!(key.open("ca-key", "v1:AAAA").is_err());
        assert!(key.open("ca-key", "plain").is_err());
    }

    #[test]
    fn master_key_file_is_created_0600_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/master.key");
        let key = MasterKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(again.open("x", &key.seal("x", b"1")).unwrap(), b"1");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKey::load_or_create(&path).unwrap_err();
        assert!(matches!(err, SecretError::Permissions { .. }), "{err}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "nothex").unwrap();
        assert!(matches!(
            MasterKey::load_or_create(&path).unwrap_err(),
            SecretError::Malformed { .. }
        ));
    }

    #[test]
    fn tokens() {
        let t = Token::generate(JOIN_PREFIX);
        let text = t.reveal();
        let parsed = Token::parse(JOIN_PREFIX, &text).unwrap();
        assert_eq!(parsed, t);
        assert!(parsed.matches(&t.secret_hash()));
        assert!(!Token::generate(JOIN_PREFIX).matches(&t.secret_hash()));
        assert!(!format!("{t:?}").contains(&t.secret));
        for bad in [
            "",
            "ghj_",
            "gha_abcdefghij.abcdefghijabcdefghijabcdefghij12",
            "ghj_abc.def",
            "ghj_ABCDEFGHIJ.abcdefghijabcdefghijabcdefghij12",
        ] {
            let err = Token::parse(JOIN_PREFIX, bad).unwrap_err().to_string();
            assert!(err.starts_with("malformed token"), "{bad}: {err}");
        }
    }

    #[test]
    fn random_ids_use_the_alphabet() {
        let id = random_id(1000);
        assert_eq!(id.len(), 1000);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_ne!(random_id(16), random_id(16));
    }
}
