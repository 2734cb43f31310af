//! TLS: PEM certificate and key -> an OpenSSL acceptor (minimum version, cipher preference),
//! the self-signed pair of `--tls-generate-cert`, the fingerprint people compare by eye, and a
//! small adapter that runs OpenSSL over a smol stream. It never accepts sockets: `http/server.rs`
//! hands it each connection and bounds the handshake in time.
//!
//! Why the `openssl` crate and not native-tls: native-tls cannot set a server cipher
//! preference or the TLS 1.3 suites, and on a CPU without AES instructions (Raspberry Pi 4
//! and older) the difference between AES-GCM and ChaCha20-Poly1305 is several times the
//! throughput. Both link the same OpenSSL, so this costs nothing in size.
//!
//! The adapter: OpenSSL wants blocking `Read`/`Write`; [`Bridge`] turns a `Pending` of the
//! async stream into `WouldBlock`, which OpenSSL reports as WANT_READ/WANT_WRITE, and we turn
//! back into `Pending`. The waker of the current poll is stored in the bridge (a clone, no
//! raw pointers), so the underlying socket wakes the right task.

use crate::cli::{TlsConfig, TlsVersion};
use crate::lock::ReadWrite as _;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    ErrorCode, Ssl, SslAcceptor, SslMethod, SslMode, SslOptions, SslStream, SslVersion,
};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509NameBuilder};
use smol::io::{AsyncRead, AsyncWrite};
use std::fs::{DirBuilder, OpenOptions};
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::sync::RwLock;
use std::task::{Context, Poll, Waker};

/// Validity of a generated certificate. Long, because renewing means handing every client
/// the new certificate; the key never leaves the server.
const GENERATED_CERT_DAYS: u32 = 3650;

/// A generated certificate is valid from a day before it was made, so that a client whose
/// clock is a little behind does not reject it.
const GENERATED_BACKDATE_SECS: i64 = 24 * 3600;

/// Mode of a generated private key; directories we create for it are private too.
const KEY_MODE: u32 = crate::modes::PRIVATE_FILE;
const CERT_MODE: u32 = 0o644;
const DIR_MODE: u32 = crate::modes::PRIVATE_DIR;

/// TLS 1.2 suites: ECDHE with an AEAD only. Both orders are offered, the first wins
/// (server preference); restic's Go client and curl support all of them.
const TLS12_AES_FIRST: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
    ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
    ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
const TLS12_CHACHA_FIRST: &str = "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
    ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
    ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";
const TLS13_AES_FIRST: &str =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
const TLS13_CHACHA_FIRST: &str =
    "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384";

/// Whether this CPU has AES instructions (AES-NI, ARMv8 AES), detected at run time, the same
/// question Go's crypto/tls asks to order its suites. Other architectures (32-bit ARM, MIPS
/// routers): assume not.
pub(crate) fn cpu_has_aes() -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    return std::arch::is_x86_feature_detected!("aes");
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("aes");
    #[allow(unreachable_code)]
    false
}

/// The server's TLS state: the settings, and the acceptor built from the current cert/key
/// pair, which SIGHUP may replace while connections are open.
pub(crate) struct Tls {
    cfg: TlsConfig,
    chacha_first: bool,
    /// Handshakes clone the acceptor (a reference count) under the read lock; a reload swaps
    /// it under the write lock. Sessions already made keep their own reference.
    acceptor: RwLock<SslAcceptor>,
}

/// What the start-up lines report.
pub(crate) struct Loaded {
    pub fingerprint: String,
    pub warnings: Vec<String>,
}

impl Tls {
    /// Reads (or with `--tls-generate-cert` first creates) the pair and builds the acceptor.
    /// Errors are one line naming the file or flag and the problem.
    pub(crate) fn start(cfg: &TlsConfig) -> Result<(Tls, Loaded), String> {
        if cfg.generate {
            let names = if cfg.hostnames.is_empty() {
                default_hostnames()
            } else {
                cfg.hostnames.clone()
            };
            if generate(&cfg.cert, &cfg.key, &names)? {
                log::info!(
                    "--tls-generate-cert: created a self-signed certificate {} for {} and its key {}",
                    cfg.cert.display(),
                    names.join(", "),
                    cfg.key.display()
                );
            } else {
                log::info!(
                    "--tls-generate-cert: {} and {} exist already: using them, not overwriting",
                    cfg.cert.display(),
                    cfg.key.display()
                );
            }
        }
        let chacha_first = cfg.prefer_chacha20 || !cpu_has_aes();
        let (acceptor, loaded) = build(cfg, chacha_first)?;
        let tls = Tls {
            cfg: cfg.clone(),
            chacha_first,
            acceptor: RwLock::new(acceptor),
        };
        Ok((tls, loaded))
    }

    /// Start-up lines describing the settings, one fact each.
    pub(crate) fn describe(&self) -> Vec<String> {
        let min = match self.cfg.min_version {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        };
        let order = if self.cfg.prefer_chacha20 {
            "ChaCha20-Poly1305 first (--tls-prefer-chacha20)"
        } else if self.chacha_first {
            "ChaCha20-Poly1305 first (this CPU has no AES instructions)"
        } else {
            "AES-GCM first (this CPU has AES instructions), ChaCha20-Poly1305 for clients that prefer it"
        };
        vec![
            format!("TLS enabled, minimum version {min}"),
            format!("TLS certificate: {}", self.cfg.cert.display()),
            format!("TLS key: {}", self.cfg.key.display()),
            format!("TLS cipher preference: {order}"),
        ]
    }

    /// SIGHUP: new handshakes use the pair now on disk; open connections keep theirs. A pair
    /// that does not load leaves the old one in place. Returns the new certificate's
    /// fingerprint if one was loaded.
    pub(crate) fn reload(&self) -> Option<String> {
        match build(&self.cfg, self.chacha_first) {
            Ok((acceptor, loaded)) => {
                *self.acceptor.write_locked() = acceptor;
                log::info!("TLS certificate reloaded");
                log::info!("SERVER CERT SHA256: {}", loaded.fingerprint);
                for w in loaded.warnings {
                    log::warn!("{w}");
                }
                Some(loaded.fingerprint)
            }
            Err(e) => {
                log::error!("TLS reload failed, keeping the previous certificate: {e}");
                None
            }
        }
    }

    /// Runs the server side of a handshake on `stream`. Unbounded in time: the caller adds
    /// the timeout.
    pub(crate) async fn handshake<S>(&self, stream: S) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = self.acceptor.read_locked().clone();
        let ssl = Ssl::new(acceptor.context()).map_err(io::Error::other)?;
        let mut tls = SslStream::new(ssl, Bridge::new(stream)).map_err(io::Error::other)?;
        poll_fn(|cx| {
            tls.get_mut().set_waker(cx.waker());
            match tls.accept() {
                Ok(()) => Poll::Ready(Ok(())),
                Err(e) => match e.code() {
                    ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => {
                        if e.io_error().is_none() {
                            // OpenSSL wants another go without the socket blocking.
                            cx.waker().wake_by_ref();
                        }
                        Poll::Pending
                    }
                    _ => Poll::Ready(Err(ssl_to_io(e))),
                },
            }
        })
        .await?;
        Ok(TlsStream(tls))
    }
}

fn ssl_to_io(e: openssl::ssl::Error) -> io::Error {
    if e.io_error().is_some() {
        return e.into_io_error().unwrap_or_else(io::Error::other);
    }
    let what = match e.ssl_error() {
        Some(stack) => stack.to_string(),
        None => format!("{e}"),
    };
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads the pair and builds an acceptor from it.
fn build(cfg: &TlsConfig, chacha_first: bool) -> Result<(SslAcceptor, Loaded), String> {
    let cert_pem = read_file(&cfg.cert, "certificate")?;
    let key_pem = read_file(&cfg.key, "key")?;
    let mut chain = X509::stack_from_pem(&cert_pem)
        .unwrap_or_default()
        .into_iter();
    let cert = chain.next().ok_or_else(|| {
        format!(
            "TLS certificate {}: no PEM certificate in it (--tls-cert)",
            cfg.cert.display()
        )
    })?;
    // A passphrase callback that gives none: an encrypted key is refused at once instead of
    // OpenSSL asking for its passphrase on the terminal (which a service never answers).
    let key = PKey::private_key_from_pem_callback(&key_pem, |_| Ok(0)).map_err(|_| {
        format!(
            "TLS key {}: not a PEM private key, or one protected by a passphrase (--tls-key)",
            cfg.key.display()
        )
    })?;
    if !cert.public_key().is_ok_and(|p| p.public_eq(&key)) {
        return Err(format!(
            "TLS key {} does not belong to certificate {} (--tls-key, --tls-cert)",
            cfg.key.display(),
            cfg.cert.display()
        ));
    }
    let acceptor = acceptor(cfg.min_version, chacha_first, &cert, chain, &key).map_err(|e| {
        format!(
            "TLS certificate {} / key {}: OpenSSL refused them: {e}",
            cfg.cert.display(),
            cfg.key.display()
        )
    })?;
    let mut warnings = Vec::new();
    if Asn1Time::days_from_now(0).is_ok_and(|now| cert.not_after() < now) {
        warnings.push(format!(
            "TLS certificate {} expired on {}: clients will refuse it",
            cfg.cert.display(),
            cert.not_after()
        ));
    }
    if std::fs::metadata(&cfg.key).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
        warnings.push(format!(
            "TLS key {} is readable by other users: chmod 600 it",
            cfg.key.display()
        ));
    }
    let loaded = Loaded {
        fingerprint: fingerprint(&cert).map_err(|e| format!("cannot hash the certificate: {e}"))?,
        warnings,
    };
    Ok((acceptor, loaded))
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let flag = if what == "key" {
        "--tls-key"
    } else {
        "--tls-cert"
    };
    std::fs::read(path)
        .map_err(|e| format!("cannot read TLS {what} {} ({flag}): {e}", path.display()))
}

fn acceptor(
    min: TlsVersion,
    chacha_first: bool,
    cert: &X509,
    chain: impl Iterator<Item = X509>,
    key: &PKey<Private>,
) -> Result<SslAcceptor, ErrorStack> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_min_proto_version(Some(match min {
        TlsVersion::V1_2 => SslVersion::TLS1_2,
        TlsVersion::V1_3 => SslVersion::TLS1_3,
    }))?;
    // Server preference for TLS 1.2 and 1.3 alike. With AES in hardware, PRIORITIZE_CHACHA
    // still gives ChaCha20 to a client that lists it first (it has no AES itself), as Go does.
    // No client-initiated renegotiation (a CPU-cost lever for a client; Go refuses it too).
    let mut options = SslOptions::CIPHER_SERVER_PREFERENCE | SslOptions::NO_RENEGOTIATION;
    if chacha_first {
        b.set_cipher_list(TLS12_CHACHA_FIRST)?;
        b.set_ciphersuites(TLS13_CHACHA_FIRST)?;
    } else {
        b.set_cipher_list(TLS12_AES_FIRST)?;
        b.set_ciphersuites(TLS13_AES_FIRST)?;
        options |= SslOptions::PRIORITIZE_CHACHA;
    }
    b.set_options(options);
    // Idle keep-alive connections give their 2 x ~34 KiB record buffers back (a Pi has
    // little memory, restic keeps several connections open).
    b.set_mode(SslMode::RELEASE_BUFFERS);
    b.set_certificate(cert)?;
    for c in chain {
        b.add_extra_chain_cert(c)?;
    }
    b.set_private_key(key)?;
    b.check_private_key()?;
    Ok(b.build())
}

/// SHA-256 of the certificate (DER), lowercase hex: what `openssl x509 -fingerprint -sha256`
/// prints, without the colons.
pub(crate) fn fingerprint(cert: &X509) -> Result<String, ErrorStack> {
    let digest = cert.digest(MessageDigest::sha256())?;
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// This machine's name plus the loopback names: what clients on the host and on the LAN
/// (by hostname) use.
fn default_hostnames() -> Vec<String> {
    let mut names = Vec::new();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let host = host.trim();
    if !host.is_empty() && host != "localhost" && host.parse::<std::net::IpAddr>().is_err() {
        names.push(host.to_owned());
    }
    names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    names
}

/// `--tls-generate-cert`: creates a self-signed certificate and key at the given paths if
/// neither exists. `Ok(false)` when both exist (left alone). Exactly one existing is an
/// error: writing the other would pair it with a key or certificate it does not belong to.
fn generate(cert_path: &Path, key_path: &Path, names: &[String]) -> Result<bool, String> {
    let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    match (exists(cert_path), exists(key_path)) {
        (true, true) => return Ok(false),
        (false, false) => {}
        (cert_exists, _) => {
            let (there, missing) = if cert_exists {
                (cert_path, key_path)
            } else {
                (key_path, cert_path)
            };
            return Err(format!(
                "--tls-generate-cert: {} exists but {} does not; refusing to overwrite it \
                 (remove it to generate a new pair, or give the missing file)",
                there.display(),
                missing.display()
            ));
        }
    }
    let (cert, key) = self_signed(names)
        .map_err(|e| format!("--tls-generate-cert: cannot create a certificate: {e}"))?;
    let key_pem = key
        .private_key_to_pem_pkcs8()
        .map_err(|e| format!("--tls-generate-cert: cannot encode the key: {e}"))?;
    let cert_pem = cert
        .to_pem()
        .map_err(|e| format!("--tls-generate-cert: cannot encode the certificate: {e}"))?;
    write_new(key_path, &key_pem, KEY_MODE)?;
    if let Err(e) = write_new(cert_path, &cert_pem, CERT_MODE) {
        // A key without its certificate would make every later start refuse.
        let _ = std::fs::remove_file(key_path);
        return Err(e);
    }
    Ok(true)
}

/// Writes a file that must not exist yet (O_EXCL: no overwrite, no following a symlink),
/// creating missing parent directories privately.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let fail = |e: io::Error| format!("--tls-generate-cert: cannot write {}: {e}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(fail)?;
    }
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.sync_all()
        });
    if let Err(e) = written {
        if e.kind() != io::ErrorKind::AlreadyExists {
            let _ = std::fs::remove_file(path);
        }
        return Err(fail(e));
    }
    Ok(())
}

/// An ECDSA P-256 key (RSA-4096 takes many seconds on a Pi) and a self-signed certificate
/// for `names`. CA:TRUE so that the certificate can be its own trust anchor for the clients
/// that are given it (`restic --cacert`, `curl --cacert`).
fn self_signed(names: &[String]) -> Result<(X509, PKey<Private>), ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut subject = X509NameBuilder::new()?;
    subject.append_entry_by_nid(Nid::ORGANIZATIONNAME, "rest-server")?;
    subject.append_entry_by_nid(
        Nid::COMMONNAME,
        names.first().map_or("rest-server", String::as_str),
    )?;
    let subject = subject.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(&subject)?;
    b.set_pubkey(&key)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let not_before = Asn1Time::from_str_x509(&x509_time(now - GENERATED_BACKDATE_SECS))?;
    let not_after = Asn1Time::days_from_now(GENERATED_CERT_DAYS)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_cert_sign()
            .build()?,
    )?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    let mut san = SubjectAlternativeName::new();
    for n in names {
        if n.parse::<std::net::IpAddr>().is_ok() {
            san.ip(n);
        } else {
            san.dns(n);
        }
    }
    let san = san.build(&b.x509v3_context(None, None))?;
    b.append_extension(san)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok((b.build(), key))
}

/// Seconds since 1970 (UTC) as an X.509 time string, `YYYYMMDDHHMMSSZ` (OpenSSL stores it as
/// UTCTime before 2050, as RFC 5280 wants). Not `Asn1Time::from_unix`: that passes a `time_t`,
/// which Rust's libc declares as 32 bits on the 32-bit ARM musl targets while OpenSSL,
/// compiled against musl 1.2 headers, takes 64 bits there: the argument would arrive as
/// garbage (and it does not compile there, which is how this was found).
fn x509_time(secs: i64) -> String {
    let u = crate::utc::Utc::from_unix(secs, 0);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

/// Blocking-style `Read`/`Write` over an async stream, for OpenSSL: `Pending` becomes
/// `WouldBlock`, and the stored waker of the current poll is registered with the socket.
struct Bridge<S> {
    io: S,
    waker: Waker,
}

impl<S> Bridge<S> {
    fn new(io: S) -> Self {
        Bridge {
            io,
            waker: Waker::noop().clone(),
        }
    }

    fn set_waker(&mut self, waker: &Waker) {
        if !self.waker.will_wake(waker) {
            self.waker = waker.clone();
        }
    }

    fn poll<T>(
        &mut self,
        f: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> io::Result<T>
    where
        S: Unpin,
    {
        let mut cx = Context::from_waker(&self.waker);
        match f(Pin::new(&mut self.io), &mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<S: AsyncRead + Unpin> Read for Bridge<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.poll(|io, cx| io.poll_read(cx, buf))
    }
}

impl<S: AsyncWrite + Unpin> Write for Bridge<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.poll(|io, cx| io.poll_write(cx, buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.poll(|io, cx| io.poll_flush(cx))
    }
}

/// An established TLS session.
pub(crate) struct TlsStream<S>(SslStream<Bridge<S>>);

impl<S> TlsStream<S> {
    /// Negotiated protocol and cipher, for debug logs.
    pub(crate) fn describe(&self) -> String {
        let s = &self.0;
        let cipher = s.ssl().current_cipher().map_or("?", |c| c.name());
        format!("{} {cipher}", s.ssl().version_str())
    }
}

/// `WouldBlock` from the bridge means the socket registered our waker: wait.
fn ready<T>(r: io::Result<T>) -> Poll<io::Result<T>> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        r => Poll::Ready(r),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let s = &mut self.get_mut().0;
        s.get_mut().set_waker(cx.waker());
        ready(s.read(buf))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let s = &mut self.get_mut().0;
        s.get_mut().set_waker(cx.waker());
        ready(s.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let s = &mut self.get_mut().0;
        s.get_mut().set_waker(cx.waker());
        ready(s.flush())
    }

    /// Sends close_notify (best effort: the peer may be gone), then closes our side.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let s = &mut self.get_mut().0;
        s.get_mut().set_waker(cx.waker());
        if let Err(e) = s.shutdown() {
            let blocked = matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE)
                && e.io_error()
                    .is_some_and(|e| e.kind() == io::ErrorKind::WouldBlock);
            if blocked {
                return Poll::Pending;
            }
        }
        Pin::new(&mut s.get_mut().io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x509_time_known_dates() {
        assert_eq!(x509_time(0), "19700101000000Z");
        assert_eq!(x509_time(-1), "19691231235959Z");
        assert_eq!(x509_time(951_782_400), "20000229000000Z");
        assert_eq!(x509_time(951_868_799), "20000229235959Z");
        assert_eq!(x509_time(1_700_000_000), "20231114221320Z");
        assert_eq!(x509_time(2_524_607_999), "20491231235959Z");
        assert_eq!(x509_time(4_107_542_400), "21000301000000Z");
    }

    /// A sweep over 1950..2150 (a point every 5 days and 1 hour and a few seconds, so every
    /// month, weekday and hour comes round) agrees with OpenSSL's own conversion, which is
    /// safe to call where `time_t` is 64 bits on both sides.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn x509_time_agrees_with_openssl() {
        const Y1950: i64 = -631_152_000;
        const Y2150: i64 = 5_680_281_600;
        let mut secs = Y1950;
        while secs < Y2150 {
            let ours = Asn1Time::from_str_x509(&x509_time(secs)).unwrap();
            let theirs = Asn1Time::from_unix(secs).unwrap();
            assert!(
                ours == theirs,
                "{secs}: {} vs {}",
                x509_time(secs),
                &*theirs
            );
            secs += 5 * 86_400 + 3_607;
        }
    }
}
