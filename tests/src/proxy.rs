//! A TCP proxy a test can cut and restore, to make PostgreSQL or Redis "go away" for one app
//! without stopping the shared service.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, _) = watch::channel(false);
        let cut = Arc::new(tx);
        let task = tokio::spawn(run(listener, target, cut.clone()));
        TcpProxy {
            addr,
            target,
            cut,
            task: Some(task),
        }
    }

    /// Closes the listener and every forwarded connection.
    pub async fn cut(&mut self) {
        self.cut.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
            task.await.ok();
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) {
        self.cut.send_replace(false);
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.task = Some(tokio::spawn(run(listener, self.target, self.cut.clone())));
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn run(listener: TcpListener, target: SocketAddr, cut: Arc<watch::Sender<bool>>) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let mut cut_rx = cut.subscribe();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(target).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut_rx.wait_for(|cut| *cut) => {}
            }
        });
    }
}
