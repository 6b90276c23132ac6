//! Access control: who may publish, who may subscribe, which web pages may call the hub.
//!
//! All three are off by default (the hub then answers anyone on the address it listens on,
//! as `cargo run --release` always did) and each is turned on by a flag.
//!
//! # Publishers: one bearer token (`--publish-token-file`)
//! Publishing (`POST /pub/..`) and burning CPU (`GET /work`) are what a *backend* does, so
//! they are guarded by one shared secret the backend keeps, sent as
//! `Authorization: Bearer <token>`. A request without it, or with another, gets 401 and
//! `WWW-Authenticate: Bearer` before its body is looked at. The comparison takes the same
//! time whatever the token sent: the server compares SHA-256 digests of the expected and
//! the presented token with an XOR-fold over all 32 bytes, so neither the position of the
//! first wrong byte nor the token's length shows through the time an answer takes.
//!
//! # Subscribers: signed, expiring tokens (`--subscribe-key-file`)
//! Subscribers are often browsers, which must not hold the publish secret, and the hub keeps
//! no sessions. So the backend *signs* a permission instead: `token=EXPIRY.SIG` in the query,
//! where EXPIRY is a unix time in seconds and SIG the lowercase hex HMAC-SHA256 of
//! `CHANNEL\nEXPIRY` under a key the backend and the hub share. The hub checks the signature
//! and the clock, nothing else: no store, no lookup, no state to lose at a restart, and a
//! token is good for one channel until it expires (it cannot be revoked earlier: keep TTLs
//! short). `tidings token CHANNEL` prints one; any language with an HMAC can mint them
//! (README, "Access control"). Signatures are checked by the `hmac` crate's constant-time
//! `verify_slice`.
//!
//! # Browsers on other origins: CORS (`--allow-origin`)
//! A page served from another origin may only read answers the hub marks as meant for it
//! (`Access-Control-Allow-Origin`), and may only send `Authorization` after a preflight
//! `OPTIONS` that the hub answers with the methods and headers it accepts. [`Cors`] decides,
//! from the request's `Origin`, whether a request is granted, and decorates the answers.
//!
//! The cryptography is RustCrypto's `sha2` and `hmac`; nothing here implements a hash.

use std::fmt;
use std::io::Read as _;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use http::Response;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Secret files are small; reading stops past this, so a path like `/dev/zero` is an error
/// and not a hang.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Reads a token or key file: its contents with one trailing newline (`\n` or `\r\n`)
/// removed. Missing, unreadable, empty (after that) or too large: a one-line error naming
/// `flag` and the path.
pub(crate) fn read_secret_file(flag: &str, path: &str) -> Result<Vec<u8>, String> {
    let fail = |why: String| format!("{flag} {path}: {why}");
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1).read_to_end(&mut bytes).map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(fail(format!("larger than {MAX_SECRET_FILE} bytes")));
    }
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(fail("the file is empty".into()));
    }
    Ok(bytes)
}

/// Whether `a` and `b` are equal, looking at every byte of both whatever they hold (equal
/// lengths only: callers compare fixed-size digests). Not cryptography: an XOR-fold, with
/// `black_box` so the compiler cannot turn it back into an early exit.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

/// Seconds since the unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// HMAC-SHA256 of `msg` under `key` (the tests check it against RFC 4231).
#[cfg(test)]
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = keyed(key);
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed): this cannot fail, but the
    // fallback keeps a panic out of the binary all the same.
    <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()))
}

/// The publish token (`--publish-token-file`), kept as its SHA-256 digest.
#[derive(Clone)]
pub struct PublishToken {
    digest: [u8; 32],
}

impl PublishToken {
    pub fn new(token: &[u8]) -> PublishToken {
        PublishToken { digest: Sha256::digest(token).into() }
    }

    /// Loads the token file. A token that could not be sent in a header (control bytes,
    /// spaces at either end) is refused too: it would lock every publisher out.
    pub(crate) fn from_file(flag: &str, path: &str) -> Result<PublishToken, String> {
        let token = read_secret_file(flag, path)?;
        let sendable =
            token.iter().all(|&b| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b) || b >= 0x80)
                && !matches!(token.first(), Some(b' ' | b'\t'))
                && !matches!(token.last(), Some(b' ' | b'\t'));
        if !sendable {
            return Err(format!(
                "{flag} {path}: the token has control characters or spaces at an end (not sendable in a header)"
            ));
        }
        Ok(PublishToken::new(&token))
    }

    /// Whether an `Authorization` header value is `Bearer <this token>` (scheme in any
    /// case, spaces around the token ignored).
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else { return false };
        let Some(scheme) = value.get(..7) else { return false };
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return false;
        }
        let presented = trim_spaces(&value[7..]);
        let digest: [u8; 32] = Sha256::digest(presented).into();
        constant_time_eq(&digest, &self.digest)
    }
}

impl fmt::Debug for PublishToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublishToken(..)")
    }
}

/// `v` without spaces and tabs at either end.
fn trim_spaces(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Why a subscribe token was refused (403, with [`TokenError::reason`] as the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// No `token=` in the query.
    Missing,
    /// Not `EXPIRY.SIG` with EXPIRY in decimal and SIG 64 lowercase hex digits.
    Malformed,
    /// Not signed by our key for this channel and expiry.
    BadSignature,
    /// Signed, but its expiry is past.
    Expired,
}

impl TokenError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            TokenError::Missing => "subscribe token missing: add token=EXPIRY.SIG to the query",
            TokenError::Malformed => {
                "subscribe token malformed: expected EXPIRY.SIG (decimal, 64 hex digits)"
            }
            TokenError::BadSignature => "subscribe token not valid for this channel",
            TokenError::Expired => "subscribe token expired",
        }
    }
}

/// The key that signs subscribe tokens (`--subscribe-key-file`), kept as a keyed HMAC state.
#[derive(Clone)]
pub struct SubscribeKey {
    mac: HmacSha256,
}

impl SubscribeKey {
    pub fn new(key: &[u8]) -> SubscribeKey {
        SubscribeKey { mac: keyed(key) }
    }

    pub(crate) fn from_file(flag: &str, path: &str) -> Result<SubscribeKey, String> {
        Ok(SubscribeKey::new(&read_secret_file(flag, path)?))
    }

    fn mac_of(&self, channel: &str, expiry: &str) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(channel.as_bytes());
        mac.update(b"\n");
        mac.update(expiry.as_bytes());
        mac
    }

    /// The token for `channel` valid until `expiry` (unix seconds): `EXPIRY.SIG`.
    pub fn sign(&self, channel: &str, expiry: u64) -> String {
        let expiry = expiry.to_string();
        let sig = self.mac_of(channel, &expiry).finalize().into_bytes();
        let mut out = String::with_capacity(expiry.len() + 65);
        out.push_str(&expiry);
        out.push('.');
        push_hex(&mut out, &sig);
        out
    }

    /// Checks `token` (the query's `token=` value, if any) for `channel` at time `now`.
    /// A token is good while `now < EXPIRY`. The signature is checked before the expiry, so
    /// "expired" is only ever said of a token this key signed.
    pub(crate) fn verify(&self, channel: &str, token: Option<&str>, now: u64) -> Result<(), TokenError> {
        let token = token.ok_or(TokenError::Missing)?;
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let (expiry_text, sig_hex) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let expiry = parse_expiry(expiry_text).ok_or(TokenError::Malformed)?;
        let sig = parse_sig(sig_hex).ok_or(TokenError::Malformed)?;
        self.mac_of(channel, expiry_text).verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        if now >= expiry {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

impl fmt::Debug for SubscribeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubscribeKey(..)")
    }
}

/// 1..=20 decimal digits that fit a u64.
fn parse_expiry(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Exactly 64 lowercase hex digits.
fn parse_sig(v: &str) -> Option<[u8; 32]> {
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    let v = v.as_bytes();
    if v.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in v.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
}

/// Lowercase hex of `bytes`.
#[cfg(test)]
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// Which browser origins may call the hub (`--allow-origin`, repeatable, or `*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Cors {
    /// No CORS headers at all (the default): pages on other origins cannot read answers.
    #[default]
    Off,
    /// `*`: any origin (answers carry `Access-Control-Allow-Origin: *`, whatever the request).
    Any,
    /// These exact origins (`scheme://host[:port]`, lowercase); answers carry `Vary: Origin`.
    Origins(Vec<Box<str>>),
}

/// A request whose `Origin` [`Cors`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    Any,
    /// Index into [`Cors::Origins`].
    Origin(usize),
}

/// Methods and request headers a preflight allows.
pub(crate) const CORS_METHODS: &str = "GET, HEAD, POST, OPTIONS";
pub(crate) const CORS_REQUEST_HEADERS: &str = "Authorization, Content-Type, If-None-Match, Last-Event-ID";
/// Answer headers a page may read besides the always-readable ones.
pub(crate) const CORS_EXPOSED_HEADERS: &str = "ETag, Retry-After, WWW-Authenticate";
/// How long a browser may cache a preflight answer, seconds.
pub(crate) const CORS_MAX_AGE: u32 = 600;

impl Cors {
    /// Adds one `--allow-origin` value. `*` allows any origin; otherwise the value must be
    /// an origin as browsers send it: `scheme://host[:port]`, no path, no trailing slash.
    pub fn allow(&mut self, flag: &str, value: &str) -> Result<(), String> {
        if value == "*" {
            *self = Cors::Any;
            return Ok(());
        }
        let valid = value.split_once("://").is_some_and(|(scheme, rest)| {
            !scheme.is_empty()
                && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
                && !rest.is_empty()
                && rest.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'@'))
        });
        if !valid {
            return Err(format!(
                "invalid value {value:?} for {flag}: expected an origin like https://app.example:8443 (no path) or *"
            ));
        }
        match self {
            Cors::Any => {}
            Cors::Off => *self = Cors::Origins(vec![value.to_ascii_lowercase().into()]),
            Cors::Origins(list) => list.push(value.to_ascii_lowercase().into()),
        }
        Ok(())
    }

    /// Whether a request with this `Origin` header is granted CORS.
    pub(crate) fn grant(&self, origin: Option<&[u8]>) -> Option<Grant> {
        let origin = origin?;
        match self {
            Cors::Off => None,
            Cors::Any => Some(Grant::Any),
            Cors::Origins(list) => list.iter().position(|o| o.as_bytes() == origin).map(Grant::Origin),
        }
    }

    fn allow_origin_value(&self, grant: Grant) -> &str {
        match (self, grant) {
            (Cors::Origins(list), Grant::Origin(i)) => list.get(i).map_or("null", |o| o),
            _ => "*",
        }
    }

    /// Adds the CORS headers to an answer: `Access-Control-Allow-Origin` and
    /// `-Expose-Headers` when `grant` is given, and `Vary: Origin` whenever the answer
    /// depends on the request's origin (a list of origins), so no cache hands one origin's
    /// answer to another.
    pub(crate) fn decorate(&self, mut resp: Response, grant: Option<Grant>) -> Response {
        if let Some(g) = grant {
            resp = resp
                .header("Access-Control-Allow-Origin", self.allow_origin_value(g))
                .header("Access-Control-Expose-Headers", CORS_EXPOSED_HEADERS);
        }
        if matches!(self, Cors::Origins(_)) {
            resp = resp.header("Vary", "Origin");
        }
        resp
    }
}

/// The answer to a preflight `OPTIONS` from a granted origin: 204 with what is allowed
/// (and, like every answer to it, [`Cors::decorate`]d).
pub(crate) fn cors_preflight() -> Response {
    Response::new(204)
        .header("Access-Control-Allow-Methods", CORS_METHODS)
        .header("Access-Control-Allow-Headers", CORS_REQUEST_HEADERS)
        .header("Access-Control-Max-Age", CORS_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// RFC 4231, section 4: HMAC-SHA256 test cases 1-4, 6 and 7 (case 5 is a truncated
    /// output, which this module never uses).
    #[test]
    fn rfc4231_hmac_sha256_vectors() {
        let cases: [(Vec<u8>, Vec<u8>, &str); 6] = [
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                unhex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
                vec![0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                vec![0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. \
                  The key needs to be hashed before being used by the HMAC algorithm."
                    .to_vec(),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (i, (key, data, want)) in cases.iter().enumerate() {
            assert_eq!(hex(&hmac_sha256(key, data)), *want, "RFC 4231 case {}", [1, 2, 3, 4, 6, 7][i]);
        }
    }

    #[test]
    fn sign_is_hmac_of_channel_newline_expiry() {
        let key = SubscribeKey::new(b"Jefe");
        let token = key.sign("news", 1_900_000_000);
        assert_eq!(token, format!("1900000000.{}", hex(&hmac_sha256(b"Jefe", b"news\n1900000000"))));
    }

    #[test]
    fn verify_says_why() {
        let key = SubscribeKey::new(b"secret");
        let now = 1_800_000_000;
        let good = key.sign("news", now + 60);
        assert_eq!(key.verify("news", Some(&good), now), Ok(()));
        assert_eq!(key.verify("news", None, now), Err(TokenError::Missing));
        assert_eq!(key.verify("news", Some(""), now), Err(TokenError::Missing));
        assert_eq!(key.verify("sport", Some(&good), now), Err(TokenError::BadSignature));
        assert_eq!(key.verify("news", Some(&good), now + 60), Err(TokenError::Expired));
        assert_eq!(
            SubscribeKey::new(b"other").verify("news", Some(&good), now),
            Err(TokenError::BadSignature)
        );
        // Another expiry under the same signature: the signature covers the expiry.
        let (_, sig) = good.split_once('.').unwrap();
        assert_eq!(
            key.verify("news", Some(&format!("{}.{sig}", now + 99)), now),
            Err(TokenError::BadSignature)
        );
        for bad in ["123", "abc.def", ".00", "12.zz", &good.to_uppercase(), &format!("{good}0"), "-1.00"] {
            assert_eq!(key.verify("news", Some(bad), now), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn bearer_header() {
        let t = PublishToken::new(b"s3cret");
        assert!(t.accepts(Some(b"Bearer s3cret")));
        assert!(t.accepts(Some(b"bearer  s3cret ")));
        assert!(!t.accepts(None));
        assert!(!t.accepts(Some(b"Bearer s3cre")));
        assert!(!t.accepts(Some(b"Bearer s3cret2")));
        assert!(!t.accepts(Some(b"Basic s3cret")));
        assert!(!t.accepts(Some(b"Bearer")));
        assert!(!t.accepts(Some(b"s3cret")));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn origins() {
        let mut c = Cors::Off;
        assert_eq!(c.grant(Some(b"http://a.example")), None);
        c.allow("--allow-origin", "HTTP://A.example:8080").unwrap();
        c.allow("--allow-origin", "https://b.example").unwrap();
        assert_eq!(c.grant(Some(b"http://a.example:8080")), Some(Grant::Origin(0)));
        assert_eq!(c.grant(Some(b"https://b.example")), Some(Grant::Origin(1)));
        assert_eq!(c.grant(Some(b"https://c.example")), None);
        assert_eq!(c.grant(None), None);
        for bad in ["", "a.example", "http://", "http://a.example/", "http://a b", "://x", "http://a?x"] {
            assert!(c.allow("--allow-origin", bad).is_err(), "{bad}");
        }
        c.allow("--allow-origin", "*").unwrap();
        assert_eq!(c, Cors::Any);
        assert_eq!(c.grant(Some(b"https://anything.example")), Some(Grant::Any));
    }
}
