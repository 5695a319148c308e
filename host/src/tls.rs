//! TLS for the API's listener, with rustls: a certificate chain and its key from PEM
//! files, re-read when either file changes (a renewed certificate is served to the next
//! connection, with no restart), HTTP/2 and HTTP/1.1 offered by ALPN; and the
//! certificates outgoing https trusts besides the web's roots (`--ca-cert`).

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// The protocols offered by ALPN, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The server's TLS: its configuration and the certificate it serves, kept current with
/// its files.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ServerConfig>,
    current: Arc<Reloading>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.current.cert)
            .field("key", &self.current.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// TLS with the certificate chain in `cert` and its private key in `key` (PEM).
    /// Fails, naming the file, when either cannot be read, holds nothing usable, or the
    /// key is not the certificate's.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Tls, String> {
        // ring, as the rest of the binary's TLS (the HTTP client) uses: it builds with no
        // C toolchain beyond a compiler, for a static binary too. rustls marks it
        // deprecated for lacking post-quantum key exchange, which aws-lc-rs offers.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = load(&provider, cert, key)?;
        let current = Arc::new(Reloading {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider: Arc::clone(&provider),
            served: RwLock::new(loaded),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Tls {
            config: Arc::new(config),
            current,
        })
    }

    /// The acceptor of connections.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }

    /// Reads the files again if either changed since they were last read: a usable pair
    /// is served from the next connection on; anything else is logged and the pair
    /// already served kept. Whether a new pair is served.
    pub fn reload_if_changed(&self) -> bool {
        self.current.reload_if_changed()
    }

    /// Checks the files every `every` for as long as the task runs.
    pub fn watch(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let current = Arc::clone(&self.current);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let current = Arc::clone(&current);
                let _ = tokio::task::spawn_blocking(move || current.reload_if_changed()).await;
            }
        })
    }
}

/// A certificate and key pair as served, with when its files were last changed.
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
}

/// The certificate served, re-read from its files when they change.
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    served: RwLock<Loaded>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Reloading {
    fn reload_if_changed(&self) -> bool {
        let stamp = stamps(&self.cert, &self.key);
        let known = self.served.read().map(|s| s.stamp).ok();
        if known == Some(stamp) {
            return false;
        }
        match load(&self.provider, &self.cert, &self.key) {
            Ok(loaded) => {
                if let Ok(mut served) = self.served.write() {
                    *served = loaded;
                }
                tracing::info!(
                    "TLS: serving the certificate in {} from now on",
                    self.cert.display()
                );
                true
            }
            Err(e) => {
                // Kept from being tried again until the files change once more.
                if let Ok(mut served) = self.served.write() {
                    served.stamp = stamp;
                }
                tracing::warn!("TLS: {e}; still serving the certificate read before");
                false
            }
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.served.read().ok().map(|s| Arc::clone(&s.key))
    }
}

/// When the two files were last changed (`None` for one that cannot be read).
fn stamps(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (at(cert), at(key))
}

/// The pair in `cert` and `key`, checked to belong together.
fn load(provider: &CryptoProvider, cert: &Path, key: &Path) -> Result<Loaded, String> {
    let stamp = stamps(cert, key);
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate (a PEM `CERTIFICATE` block)",
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        format!(
            "--tls-key {} is not the key of --tls-cert {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        stamp,
    })
}

/// Certificates to trust besides the web's roots, from a PEM file (`--ca-cert`).
pub fn extra_roots(path: Option<&Path>) -> Result<Vec<reqwest::Certificate>, String> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no certificate", path.display()));
    }
    Ok(certs)
}
