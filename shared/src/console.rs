//! The web console's files, served by the `console` function from `GET /` and
//! `GET /assets/{file}` of the HTTP API, so the console shares the API's origin and needs no
//! cross-origin access.
//!
//! The files are built by npm and embedded into the function at compile time (its `build.rs`);
//! this module decides what each request gets: the page with its Content-Security-Policy, an asset
//! (gzipped when the client accepts it, cached for a year because its name carries its hash), or
//! a `404`/`405` in the API's error shape.

use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::http::{HttpRequest, HttpResponse};

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The file name under `/assets/` (`index.html` is the page at `/`).
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// The same bytes gzipped, when that is smaller.
    pub gzip: Option<&'static [u8]>,
}

/// What the console function answers: like [`HttpResponse`], but the body may be binary.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// The body is not UTF-8 text (gzip): API Gateway must get it base64-encoded.
    pub binary: bool,
}

impl ConsoleResponse {
    fn from_http(response: HttpResponse) -> Self {
        Self {
            status: response.status,
            headers: response.headers,
            body: response.body.into_bytes(),
            binary: false,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The meta tag in `index.html` whose `content` carries the live-updates URL to the page.
const LIVE_URL_META: &str = "<meta name=\"tally-live\" content=\"\">";
const PAGE: &str = "index.html";

pub struct Console {
    assets: &'static [Asset],
    page: Vec<u8>,
    page_etag: String,
    csp: String,
}

impl Console {
    /// `live_url` is the WebSocket API's `wss://` (or, locally, `ws://`) URL, when there is one:
    /// it goes into the page and into the policy's `connect-src`, and nowhere else.
    pub fn new(assets: &'static [Asset], live_url: Option<&str>) -> Self {
        let template = assets
            .iter()
            .find(|a| a.name == PAGE)
            .map(|a| String::from_utf8_lossy(a.body).into_owned())
            .unwrap_or_default();
        let live = live_url.unwrap_or_default();
        let page = template
            .replace(
                LIVE_URL_META,
                &format!("<meta name=\"tally-live\" content=\"{}\">", html_attr(live)),
            )
            .into_bytes();
        let page_etag = format!("\"{}\"", hex::encode(&Sha256::digest(&page)[..12]));
        Self {
            assets,
            page,
            page_etag,
            csp: content_security_policy(live_url),
        }
    }

    pub fn serve(&self, request: &HttpRequest) -> ConsoleResponse {
        if request.method != "GET" && request.method != "HEAD" {
            return self.error(&ApiError::MethodNotAllowed { allow: "GET, HEAD" }, request);
        }
        let mut response = if request.path == "/" || request.path.is_empty() {
            self.page(request)
        } else if let Some(asset) = request.path.strip_prefix("/assets/").and_then(|name| {
            self.assets
                .iter()
                .find(|a| a.name == name && a.name != PAGE)
        }) {
            asset_response(asset, request)
        } else {
            return self.error(&ApiError::NotFound, request);
        };
        if request.method == "HEAD" {
            response.body.clear();
        }
        response
    }

    fn page(&self, request: &HttpRequest) -> ConsoleResponse {
        let mut headers = vec![
            ("content-type", "text/html; charset=utf-8".to_owned()),
            // Always revalidated: it names the current build's assets.
            ("cache-control", "no-cache".to_owned()),
            ("etag", self.page_etag.clone()),
            ("content-security-policy", self.csp.clone()),
        ];
        headers.extend(security_headers());
        if request.header("if-none-match") == Some(self.page_etag.as_str()) {
            return ConsoleResponse {
                status: 304,
                headers,
                body: Vec::new(),
                binary: false,
            };
        }
        ConsoleResponse {
            status: 200,
            headers,
            body: self.page.clone(),
            binary: false,
        }
    }

    fn error(&self, error: &ApiError, request: &HttpRequest) -> ConsoleResponse {
        ConsoleResponse::from_http(HttpResponse::error(error, &request.request_id))
    }
}

fn asset_response(asset: &Asset, request: &HttpRequest) -> ConsoleResponse {
    let mut headers = vec![
        ("content-type", asset.content_type.to_owned()),
        // Names carry a content hash (the sample file's does not, and may change with a release).
        (
            "cache-control",
            if is_hashed(asset.name) {
                "public, max-age=31536000, immutable".to_owned()
            } else {
                "public, max-age=300".to_owned()
            },
        ),
        ("vary", "accept-encoding".to_owned()),
    ];
    headers.extend(security_headers());
    match asset.gzip.filter(|_| accepts_gzip(request)) {
        Some(gzip) => {
            headers.push(("content-encoding", "gzip".to_owned()));
            ConsoleResponse {
                status: 200,
                headers,
                body: gzip.to_vec(),
                binary: true,
            }
        }
        None => ConsoleResponse {
            status: 200,
            headers,
            body: asset.body.to_vec(),
            binary: !asset.content_type.starts_with("text/")
                && !asset.content_type.starts_with("application/javascript"),
        },
    }
}

/// `console-3F2A9C1B.js`: the build names bundles `<name>-<8+ hex or base32 chars>.<ext>`.
fn is_hashed(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or_default();
    stem.rsplit_once('-')
        .is_some_and(|(_, hash)| hash.len() >= 8 && hash.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn accepts_gzip(request: &HttpRequest) -> bool {
    request.header("accept-encoding").is_some_and(|value| {
        value.split(',').any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
    })
}

fn security_headers() -> [(&'static str, String); 4] {
    [
        ("x-content-type-options", "nosniff".to_owned()),
        ("referrer-policy", "no-referrer".to_owned()),
        ("x-frame-options", "DENY".to_owned()),
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains".to_owned(),
        ),
    ]
}

/// Scripts and styles only from the console's own origin (no inline code, no `eval`); requests
/// only to the API (same origin) and the live-updates socket; no frames, forms, plugins or base.
pub fn content_security_policy(live_url: Option<&str>) -> String {
    let connect = match live_url.and_then(socket_origin) {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         font-src 'self'; connect-src {connect}; manifest-src 'self'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'"
    )
}

/// `wss://host[:port]` of a socket URL; `None` for anything else, so a bad setting cannot widen
/// the policy.
fn socket_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "wss" && scheme != "ws" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    valid.then(|| format!("{scheme}://{host}"))
}

fn html_attr(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    static ASSETS: &[Asset] = &[
        Asset {
            name: "index.html",
            content_type: "text/html; charset=utf-8",
            body: b"<head><meta name=\"tally-live\" content=\"\"></head>",
            gzip: None,
        },
        Asset {
            name: "console-AB12CD34.js",
            content_type: "application/javascript; charset=utf-8",
            body: b"console.log(1)",
            gzip: Some(b"\x1f\x8b-fake"),
        },
        Asset {
            name: "sample.csv",
            content_type: "text/csv; charset=utf-8",
            body: b"type\nPAGE_VIEW\n",
            gzip: None,
        },
    ];

    fn get(path: &str) -> HttpRequest {
        HttpRequest::new("GET", path)
    }

    #[test]
    fn the_page_carries_the_live_url_and_a_policy_that_allows_only_it() {
        let console = Console::new(
            ASSETS,
            Some("wss://abc.execute-api.eu-west-1.amazonaws.com/live"),
        );
        let response = console.serve(&get("/"));
        assert_eq!(response.status, 200);
        let body = String::from_utf8(response.body.clone()).unwrap_or_default();
        assert!(body.contains("content=\"wss://abc.execute-api.eu-west-1.amazonaws.com/live\""));
        let csp = response
            .header("content-security-policy")
            .unwrap_or_default();
        assert!(csp.contains("connect-src 'self' wss://abc.execute-api.eu-west-1.amazonaws.com;"));
        assert!(csp.contains("script-src 'self';"));
        assert!(!csp.contains("unsafe"));
        assert_eq!(response.header("cache-control"), Some("no-cache"));
    }

    #[test]
    fn a_live_url_that_is_not_a_socket_url_is_left_out_of_the_policy() {
        let csp = content_security_policy(Some("https://evil.example"));
        assert!(csp.contains("connect-src 'self';"));
        let csp = content_security_policy(Some("wss://a b"));
        assert!(csp.contains("connect-src 'self';"));
        let console = Console::new(ASSETS, Some("ws://x\"><script>"));
        let body = String::from_utf8(console.serve(&get("/")).body).unwrap_or_default();
        assert!(!body.contains("<script>"));
    }

    #[test]
    fn the_page_answers_304_to_its_own_etag() {
        let console = Console::new(ASSETS, None);
        let first = console.serve(&get("/"));
        let etag = first.header("etag").unwrap_or_default().to_owned();
        let again = console.serve(&get("/").with_header("if-none-match", etag));
        assert_eq!(again.status, 304);
        assert!(again.body.is_empty());
    }

    #[test]
    fn hashed_assets_are_immutable_and_gzipped_when_accepted() {
        let console = Console::new(ASSETS, None);
        let plain = console.serve(&get("/assets/console-AB12CD34.js"));
        assert_eq!(plain.body, b"console.log(1)");
        assert!(!plain.binary);
        assert_eq!(plain.header("content-encoding"), None);
        assert_eq!(
            plain.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        let gzipped = console
            .serve(&get("/assets/console-AB12CD34.js").with_header("accept-encoding", "br, gzip"));
        assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
        assert!(gzipped.binary);
        let refused = console
            .serve(&get("/assets/console-AB12CD34.js").with_header("accept-encoding", "gzip;q=0"));
        assert_eq!(refused.header("content-encoding"), None);
        let sample = console.serve(&get("/assets/sample.csv"));
        assert_eq!(sample.header("cache-control"), Some("public, max-age=300"));
    }

    #[test]
    fn unknown_files_and_other_methods_get_the_error_shape() {
        let console = Console::new(ASSETS, None);
        let missing = console.serve(&get("/assets/nope.js"));
        assert_eq!(missing.status, 404);
        assert!(String::from_utf8_lossy(&missing.body).contains("\"error\""));
        // The page is not reachable under /assets/, where it would lack its policy.
        assert_eq!(console.serve(&get("/assets/index.html")).status, 404);
        let post = console.serve(&HttpRequest::new("POST", "/"));
        assert_eq!(post.status, 405);
        assert_eq!(post.header("allow"), Some("GET, HEAD"));
        let head = console.serve(&HttpRequest::new("HEAD", "/assets/sample.csv"));
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
    }
}
