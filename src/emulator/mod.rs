//! A BaseSpace-compatible server for tests, the demo and benchmarks.
//!
//! It serves one account (from a directory, a synthetic spec, a catalog or the built-in
//! demo) through the same v1pre3/v2 API shapes the real service returns (checked against
//! recorded responses), presigned content URLs with expiry, HMAC signatures and Range
//! support, a plain HTML `/browse/` view for generic HTTP tools, and emulated network
//! conditions and faults ([`faults::NetProfile`]) applied identically to every client.

pub mod account;
mod content;
pub mod demo;
pub mod faults;
pub mod formats;
pub mod http;
mod introspect;
pub(crate) mod json;
mod oauth;
mod paging;
mod routes;
pub mod source;
pub mod state;
mod v1;
mod v2;
mod write;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

pub use account::Account;
pub use faults::NetProfile;
use state::Shared;

/// Rebuilds an account from its source, for `POST /_emulator/rescan`.
pub type Rescan = Arc<dyn Fn() -> Result<Account, String> + Send + Sync>;

/// BaseSpace's presigned URLs live 7 days.
pub const DEFAULT_URL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How to run an emulator.
#[derive(Clone)]
pub struct EmulatorOptions {
    /// Where to rebuild the account from on `POST /_emulator/rescan`.
    pub rescan: Option<Rescan>,
    pub listen: SocketAddr,
    /// `None` = a random token.
    pub token: Option<String>,
    pub url_ttl: Duration,
    pub net: NetProfile,
    /// The token's scopes; `None` = what a default `bs auth` token has.
    pub scopes: Option<Vec<String>>,
}

impl std::fmt::Debug for EmulatorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorOptions")
            .field("listen", &self.listen)
            .field("net", &self.net)
            .finish()
    }
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            rescan: None,
            listen: ([127, 0, 0, 1], 0).into(),
            token: None,
            url_ttl: DEFAULT_URL_TTL,
            net: NetProfile::default(),
            scopes: None,
        }
    }
}

/// A running emulator. Dropping it stops the server.
pub struct Emulator {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    pub token: String,
    shared: Arc<Shared>,
    shutdown: parking_lot::Mutex<Option<oneshot::Sender<()>>>,
    task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").field("base_url", &self.base_url).finish()
    }
}

/// A random 32-hex-digit token.
pub fn random_token() -> String {
    let mut b = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut b);
    hex::encode(b)
}

/// Starts serving `account` on the current tokio runtime; returns once it listens.
pub async fn start(account: Account, opts: EmulatorOptions) -> std::io::Result<Emulator> {
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let base_url = state::base_url(addr);
    let token = opts.token.unwrap_or_else(random_token);
    let mut shared = Shared::new(
        account,
        token.clone(),
        base_url.clone(),
        opts.url_ttl,
        faults::Faults::new(opts.net),
    );
    shared.rescan = opts.rescan;
    if let Some(scopes) = opts.scopes {
        shared.scopes = scopes;
    }
    let shared = Arc::new(shared);
    let app = routes::router(shared.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app, rx));
    Ok(Emulator {
        addr,
        base_url,
        token,
        shared,
        shutdown: parking_lot::Mutex::new(Some(tx)),
        task: parking_lot::Mutex::new(Some(task)),
    })
}

/// Accepts connections until told to stop, then drops every open connection too: a stopped
/// emulator is really gone (refused connections), which outage tests rely on.
async fn serve(listener: tokio::net::TcpListener, app: axum::Router, mut stop: oneshot::Receiver<()>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((sock, _)) = accepted else { continue };
                let _ = sock.set_nodelay(true);
                let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(sock);
                    let _ = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, svc).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

impl Emulator {
    /// Swaps in a new account (e.g. after the data directory changed).
    pub fn replace_account(&self, account: Account) {
        self.shared.replace_account(account);
    }

    /// Stops serving now: the listener closes and open connections are dropped.
    pub fn shutdown_now(&self) {
        if let Some(tx) = self.shutdown.lock().take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }

    /// Stops and waits until the server task is gone.
    pub async fn stop(self) {
        if let Some(tx) = self.shutdown.lock().take() {
            let _ = tx.send(());
        }
        let task = self.task.lock().take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}
