//! The status page in a real headless Chromium: signed in through the one-time link it shows
//! the hosts, a failing site's error and the certificate timeline; without a session it shows
//! the sign-in notice and nothing else; every page is served under a strict CSP and no script
//! the CSP does not allow runs. Screenshots are kept in `target/test-artifacts/`.

#[path = "support/sites.rs"]
mod support;

use gatehouse_testkit::browser::{Browser, artifacts};
use support::*;

/// A raw GET with an optional cookie: status, headers, body (no redirect followed).
fn get(url: &str, cookie: Option<&str>) -> (u16, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = client.get(url);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.text().await.unwrap())
    })
}

/// What a page may not contain under the CSP: inline scripts, inline styles, event handlers.
fn assert_nothing_inline(page: &str, html: &str) {
    for script in html.match_indices("<script").map(|(i, _)| &html[i..]) {
        let tag = &script[..script.find('>').unwrap()];
        assert!(tag.contains(" src="), "{page} has an inline script: {tag}");
    }
    for bad in [
        " style=",
        " onload=",
        " onclick=",
        " onerror=",
        "javascript:",
    ] {
        assert!(!html.contains(bad), "{page} has {bad:?}");
    }
}

#[test]
fn signed_in_the_page_shows_hosts_a_failing_sites_error_and_the_certificate_timeline() {
    let f = fleet("");
    let upstream = Upstream::start("hello from a");
    f.create_site("a.example.test", &upstream, &["--name", "a"]);
    f.wait_site("a", "applied");
    f.create_failing_site("b", "b.example.test", &upstream);
    f.wait_site("b", "failed");
    wait_for(
        "the host to report its certificate",
        Duration::from_secs(30),
        || {
            let s = f.controller.ctl_json(&["agents", "status", &f.id]);
            (!s["certificates"].as_array()?.is_empty()).then_some(())
        },
    );
    let base = format!("http://127.0.0.1:{}", f.controller.http_port);
    let browser = Browser::start(&f.controller.dir.path().join("browser"));

    // Without a session: the sign-in notice on every page, and no data.
    for page in ["/ui/", "/ui/certificates", &format!("/ui/hosts/{}", f.id)] {
        browser.open(&format!("{base}{page}"));
        let dom = browser.dom();
        assert!(
            browser.text_of("sign-in").contains("gatehousectl ui login"),
            "{page}: {dom}"
        );
        assert!(
            !dom.contains(&f.id),
            "{page} shows the agent without a session"
        );
        assert!(
            !dom.contains("a.example.test"),
            "{page} shows a site without a session"
        );
        let (status, headers, _) = get(&format!("{base}{page}"), None);
        assert_eq!(status, 401, "{page}");
        assert!(headers.contains_key("content-security-policy"), "{page}");
    }

    // The one-time link signs in: a cookie a script cannot read, kept to /ui, strict.
    let link = f.controller.ctl(&["ui", "login"]);
    assert!(link.success, "{}", link.stderr);
    let link = link.stdout.trim().to_owned();
    assert!(link.starts_with(&format!("{base}/ui/login/")), "{link}");
    browser.open(&link);
    assert_eq!(browser.url(), format!("{base}/ui/"));
    let hosts = browser.text_of("hosts");
    assert!(hosts.contains(&f.id), "{hosts}");
    assert!(hosts.contains("online"), "{hosts}");
    assert!(
        hosts.contains("/nonexistent/root.pem"),
        "the host's last apply errors are on the overview: {hosts}"
    );
    browser.screenshot(&artifacts().join("status-page-hosts.png"));

    // A link works once; a second use (here without the browser's cookie) is refused.
    let (status, _, body) = get(&link, None);
    assert_eq!(status, 401);
    assert!(body.contains("used already or has expired"), "{body}");

    browser.open(&format!("{base}/ui/sites"));
    let sites = browser.text_of("sites");
    assert!(
        sites.contains("a.example.test") && sites.contains("applied"),
        "{sites}"
    );
    assert!(
        sites.contains("caddy validate rejected") && sites.contains("/nonexistent/root.pem"),
        "the failing site's error: {sites}"
    );

    browser.open(&format!("{base}/ui/certificates"));
    let dom = browser.dom();
    let timeline = &dom[dom.find("id=\"certificate-timeline\"").expect("a timeline")..];
    assert!(
        timeline.contains("<rect"),
        "the timeline has a bar: {timeline}"
    );
    assert!(browser.text_of("certificates").contains("a.example.test"));
    browser.screenshot(&artifacts().join("status-page-certificates.png"));

    browser.open(&format!("{base}/ui/hosts/{}", f.id));
    assert!(browser.text_of("generations").contains("applied"));
    assert!(browser.dom().contains("id=\"chart-cpu\""));

    // Every page: the CSP header, nothing inline, and no violation reported by the browser.
    let console = browser.console();
    let violations: Vec<_> = console
        .iter()
        .filter(|m| m.contains("Content Security Policy") || m.contains("Refused to"))
        .collect();
    assert!(
        violations.is_empty(),
        "the browser reported: {violations:?}"
    );
    // Sign in again for raw requests (the browser's cookie is HttpOnly).
    let link = f.controller.ctl(&["ui", "login"]).stdout.trim().to_owned();
    let (status, headers, _) = get(&link, None);
    assert_eq!(status, 303);
    let set_cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age="] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    for page in [
        "/ui/",
        "/ui/sites",
        "/ui/certificates",
        "/ui/alerts",
        "/ui/tunnels",
        "/ui/wireguard",
        "/ui/allowlists",
        &format!("/ui/hosts/{}", f.id),
    ] {
        let (status, headers, html) = get(&format!("{base}{page}"), Some(&cookie));
        assert_eq!(status, 200, "{page}: {html}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_nothing_inline(page, &html);
    }
}

#[test]
fn with_ui_enabled_false_there_is_no_page_and_no_sign_in_link() {
    let c = Controller::start("ui_enabled = false\n");
    assert_eq!(c.http_get("/ui/").0, 404);
    assert_eq!(c.http_get("/ui/certificates").0, 404);
    let login = c.ctl(&["ui", "login"]);
    assert!(!login.success);
    assert!(
        login.stderr.contains("ui_enabled = false"),
        "{}",
        login.stderr
    );
    assert_eq!(
        c.http_get("/healthz").0,
        200,
        "the rest of the HTTP port still serves"
    );
}
