//! A real etcd (Debian's etcd-server) for the fleet tests: started on
//! loopback ports reserved for it (no other test's bind to port 0 takes them,
//! not even while it is killed and restarted) with a temp data dir
//! (optionally TLS with a test PKI), killed by its PID when dropped. Without the binary, [`require_tool`]
//! reports the test as skipped (or fails it under `SWITCHYARD_REQUIRE_TOOLS`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{client, empty, require_tool, reserve_port, send, temp_dir, ReservedPort};

/// An etcd server this test started; killed by its PID when dropped.
pub struct Etcd {
    binary: PathBuf,
    dir: PathBuf,
    pub client_url: String,
    peer_url: String,
    /// Serving TLS and requiring client certificates, when set.
    pub tls: Option<Pki>,
    child: Option<Child>,
    /// The client and peer ports, kept from other tests for as long as
    /// this etcd may (again) listen on them.
    _ports: [ReservedPort; 2],
}

/// A CA with a server certificate for 127.0.0.1 and a client certificate,
/// as PEM files (rcgen).
pub struct Pki {
    pub ca: PathBuf,
    pub server: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
}

impl Pki {
    pub fn new(dir: &std::path::Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).expect("CA");
        let leaf = |stem: &str| {
            let key = KeyPair::generate().expect("leaf key");
            let mut params = CertificateParams::new(vec![stem.to_owned()]).expect("leaf params");
            params
                .subject_alt_names
                .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
            let cert = params.signed_by(&key, &ca, &ca_key).expect("leaf");
            let paths = (
                dir.join(format!("{stem}.pem")),
                dir.join(format!("{stem}.key")),
            );
            std::fs::write(&paths.0, cert.pem()).expect("write cert");
            std::fs::write(&paths.1, key.serialize_pem()).expect("write key");
            paths
        };
        let pki = Pki {
            ca: dir.join("ca.pem"),
            server: leaf("server"),
            client: leaf("client"),
        };
        std::fs::write(&pki.ca, ca.pem()).expect("write CA");
        pki
    }
}

impl Etcd {
    /// `tls`: https only, client certificates required.
    pub async fn start_with(name: &str, tls: bool) -> Etcd {
        let binary = require_tool("etcd");
        let dir = temp_dir(&format!("etcd-{name}"));
        let scheme = if tls { "https" } else { "http" };
        let ports = [reserve_port(), reserve_port()];
        let client_url = format!("{scheme}://{}", ports[0]);
        let peer_url = format!("http://{}", ports[1]);
        let tls = tls.then(|| Pki::new(&dir));
        let mut etcd = Etcd {
            binary,
            dir,
            client_url,
            peer_url,
            tls,
            child: None,
            _ports: ports,
        };
        etcd.spawn().await;
        etcd
    }

    pub async fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("etcd.log")).expect("etcd log");
        let mut command = Command::new(&self.binary);
        if let Some(pki) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&pki.server.0)
                .arg("--key-file")
                .arg(&pki.server.1)
                .arg("--trusted-ca-file")
                .arg(&pki.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", "fleet-test"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args([
                "--initial-cluster",
                &format!("fleet-test={}", self.peer_url),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        if self.tls.is_some() {
            // No plain /health to ask: the replicas' own retries wait.
            return;
        }
        let health = format!("{}/health", self.client_url);
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let req = http::Request::get(&health).body(empty()).expect("request");
            if let Ok(reply) = send(&client, req).await {
                if reply.text().contains("true") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy; see {}",
                self.dir.join("etcd.log").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL by PID: etcd vanishes as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.client_url.as_str()], None)
            .await
            .expect("connect to the test etcd")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
