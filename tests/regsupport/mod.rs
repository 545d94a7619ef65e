//! Servers and files for the registry access tests (registry_auth_tls.rs, registry_config.rs):
//! TLS material made with openssl, bcrypt htpasswd files, docker-registry instances with their
//! own configs serving the shared fixture storage, the token server of
//! tests/support/token_server.py, and cimagectl runs that read no configuration of the
//! machine's user (HOME, XDG_* and the auth variables point into a temporary directory).
#![allow(dead_code)]

use crate::common::{self, Ran, Store};
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A CA and a server certificate for 127.0.0.1 / localhost signed by it.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_crt: PathBuf,
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    common::run_ok(
        Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stdout(Stdio::null()),
    );
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        fs::create_dir_all(dir).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend_from_slice(&ec);
        ca.extend_from_slice(&[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=cimage test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &ca);
        let mut csr = vec!["req"];
        csr.extend_from_slice(&ec);
        csr.extend_from_slice(&[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(dir, &csr);
        fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        Pki {
            dir: dir.to_path_buf(),
            ca_crt: dir.join("ca.crt"),
            server_crt: dir.join("server.crt"),
            server_key: dir.join("server.key"),
        }
    }

    /// A client certificate signed by this CA (extendedKeyUsage clientAuth) in `dir` as
    /// NAME.cert and NAME.key: the certs.d spelling of a client pair.
    pub fn client_pair(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        fs::create_dir_all(dir).unwrap();
        let key = dir.join(format!("{name}.key"));
        let cert = dir.join(format!("{name}.cert"));
        let csr = self.dir.join(format!("{name}.csr"));
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                csr.to_str().unwrap(),
                "-subj",
                "/CN=cimage test client",
            ],
        );
        let ext = self.dir.join("client.ext");
        fs::write(
            &ext,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                csr.to_str().unwrap(),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                cert.to_str().unwrap(),
                "-days",
                "2",
                "-extfile",
                ext.to_str().unwrap(),
            ],
        );
        (cert, key)
    }

    /// A directory holding only the CA certificate (for --cert-dir).
    pub fn ca_dir(&self, dir: &Path) -> PathBuf {
        fs::create_dir_all(dir).unwrap();
        fs::copy(&self.ca_crt, dir.join("ca.crt")).unwrap();
        dir.to_path_buf()
    }

    /// ROOT/HOST_PORT/ca.crt: a certs.d root for one registry.
    pub fn certs_d(&self, root: &Path, host_port: &str) -> PathBuf {
        self.ca_dir(&root.join(host_port));
        root.to_path_buf()
    }
}

/// A self-signed RSA key and certificate that sign tokens.
pub fn token_signer(dir: &Path) -> (PathBuf, PathBuf) {
    fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "token.key",
            "-out",
            "token.crt",
            "-days",
            "2",
            "-subj",
            "/CN=cimage token signer",
        ],
    );
    (dir.join("token.key"), dir.join("token.crt"))
}

/// A bcrypt htpasswd file (docker-registry accepts bcrypt only), made with python3's crypt.
pub fn htpasswd(path: &Path, users: &[(&str, &str)]) {
    let script = "import crypt, sys\n\
                  pairs = sys.argv[1:]\n\
                  for user, password in zip(pairs[::2], pairs[1::2]):\n\
                  \x20   print(user + ':' + crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))\n";
    let mut cmd = Command::new("python3");
    cmd.args(["-W", "ignore", "-c", script]);
    for (u, p) in users {
        cmd.args([u, p]);
    }
    let out = common::run_ok(&mut cmd);
    assert!(
        out.stdout.contains("$2"),
        "not a bcrypt hash: {}",
        out.stdout
    );
    fs::write(path, out.stdout).unwrap();
}

/// A server process of this test, killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

impl Server {
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `HOST:PORT/cimage-test/NAME:t`
    pub fn name(&self, name: &str) -> String {
        format!(
            "{}/{}/{name}:{}",
            self.host_port(),
            common::REPO_PREFIX,
            common::TAG
        )
    }

    /// Kills the server (its port then refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// docker-registry on a free port with `extra` appended to its config (auth:, proxy:, …),
    /// TLS when `pki` is given, storage in `storage`.
    pub fn docker_registry(dir: &Path, storage: &Path, pki: Option<&Pki>, extra: &str) -> Server {
        Server::docker_registry_with(dir, storage, pki, None, extra)
    }

    /// As `docker_registry`, TLS with `pki`, also requiring a client certificate signed by the
    /// CA `client_ca` (`http.tls.clientcas`).
    pub fn docker_registry_mtls(dir: &Path, storage: &Path, pki: &Pki, client_ca: &Path) -> Server {
        Server::docker_registry_with(dir, storage, Some(pki), Some(client_ca), "")
    }

    fn docker_registry_with(
        dir: &Path,
        storage: &Path,
        pki: Option<&Pki>,
        client_ca: Option<&Path>,
        extra: &str,
    ) -> Server {
        fs::create_dir_all(dir).unwrap();
        for _attempt in 0..5 {
            let port = common::free_port();
            let mut tls = match pki {
                Some(p) => format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    p.server_crt.display(),
                    p.server_key.display()
                ),
                None => String::new(),
            };
            if let Some(ca) = client_ca {
                tls.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
            }
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: cimage-tests-not-a-secret\n{tls}\
                 health:\n  storagedriver:\n    enabled: false\n{extra}",
                storage.display()
            );
            let config_path = dir.join("config.yml");
            fs::write(&config_path, config).unwrap();
            let log = fs::File::create(dir.join("registry.log")).unwrap();
            let mut cmd = Command::new("docker-registry");
            cmd.arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            let child = common::spawn_tied_to_process(cmd).expect("start docker-registry");
            let mut server = Server {
                child: Some(child),
                port,
                dir: dir.to_path_buf(),
            };
            if server.wait_listening() {
                return server;
            }
            server.stop();
            eprintln!(
                "docker-registry on port {port} did not come up:\n{}",
                fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
            );
        }
        panic!("could not start docker-registry in {}", dir.display());
    }

    /// The token server of tests/support/token_server.py.
    pub fn token_server(
        dir: &Path,
        key: &Path,
        cert: &Path,
        users: &[(&str, &str)],
        anonymous_prefix: &str,
    ) -> Server {
        Server::token_server_with(dir, key, cert, users, &[], anonymous_prefix)
    }

    /// As `token_server`, also exchanging each (refresh token, user) of `refresh_tokens`
    /// through the OAuth2 POST (grant_type=refresh_token).
    pub fn token_server_with(
        dir: &Path,
        key: &Path,
        cert: &Path,
        users: &[(&str, &str)],
        refresh_tokens: &[(&str, &str)],
        anonymous_prefix: &str,
    ) -> Server {
        fs::create_dir_all(dir).unwrap();
        let port_file = dir.join("port");
        let _ = fs::remove_file(&port_file);
        let mut cmd = Command::new("python3");
        cmd.arg(common::support("token_server.py"))
            .arg(&port_file)
            .arg("--key")
            .arg(key)
            .arg("--cert")
            .arg(cert)
            .args(["--issuer", TOKEN_ISSUER, "--service", TOKEN_SERVICE])
            .arg("--anonymous-prefix")
            .arg(anonymous_prefix)
            .arg("--log")
            .arg(dir.join("requests.log"))
            .stdin(Stdio::null())
            .stderr(fs::File::create(dir.join("stderr.log")).unwrap());
        for (u, p) in users {
            cmd.arg("--user").arg(format!("{u}:{p}"));
        }
        for (t, u) in refresh_tokens {
            cmd.arg("--refresh-token").arg(format!("{t}:{u}"));
        }
        let mut child = common::spawn_tied_to_process(cmd).expect("start the token server");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(port) = fs::read_to_string(&port_file) {
                let port: u16 = port.trim().parse().expect("port number");
                return Server {
                    child: Some(child),
                    port,
                    dir: dir.to_path_buf(),
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the token server exited ({status}): {}",
                    fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the token server did not start");
    }

    /// The token server's request log: one JSON object per token request.
    pub fn token_requests(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.dir.join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("log line"))
            .collect()
    }

    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub const TOKEN_ISSUER: &str = "cimage-token-issuer";
pub const TOKEN_SERVICE: &str = "cimage-test-registry";

/// The `auth: token:` section of a docker-registry config for `token`.
pub fn token_auth_config(token: &Server, cert: &Path) -> String {
    format!(
        "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
        token.host_port(),
        cert.display()
    )
}

/// The fixtures' registry storage, shared read-only by the test's own registries.
pub fn shared_storage() -> Option<PathBuf> {
    let registry = common::registry()?;
    Some(registry.dir.join("storage"))
}

/// A home directory for cimagectl: nothing of the machine's user is read.
pub struct Home {
    pub dir: PathBuf,
    /// Extra environment (REGISTRY_AUTH_FILE, DOCKER_CONFIG, PATH …) for the next runs.
    pub env: Vec<(String, String)>,
    _tmp: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        let tmp = tempfile::Builder::new()
            .prefix("cimage-home-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_path_buf();
        fs::create_dir_all(dir.join("run")).unwrap();
        Home {
            dir,
            env: Vec::new(),
            _tmp: tmp,
        }
    }

    /// `cimagectl` for `store` with this home and no inherited registry configuration.
    pub fn command(&self, store: &Store, args: &[&str]) -> Command {
        let mut cmd = store.command(args);
        for var in [
            "REGISTRY_AUTH_FILE",
            "DOCKER_CONFIG",
            "XDG_CONFIG_HOME",
            "CONTAINERS_REGISTRIES_CONF",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("HOME", &self.dir)
            .env("XDG_RUNTIME_DIR", self.dir.join("run"));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, store: &Store, args: &[&str]) -> Ran {
        common::run(&mut self.command(store, args))
    }

    /// Pulls, asserting success; returns the image's JSON ({"id","digest","names"}).
    pub fn pull(&self, store: &Store, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["--json", "pull"];
        full.extend_from_slice(args);
        let r = self.run(store, &full);
        assert!(r.ok(), "cimagectl {full:?} failed:\n{}", r.stderr);
        serde_json::from_str(r.stdout.trim()).expect("pull JSON")
    }

    /// Pulls, asserting failure with `status`; returns the error line's message.
    pub fn pull_fails(&self, store: &Store, args: &[&str], status: &str) -> String {
        let mut full = vec!["pull"];
        full.extend_from_slice(args);
        let r = self.run(store, &full);
        common::assert_error_line(&r, &[status], &format!("cimagectl {full:?}"));
        r.stderr
            .lines()
            .find(|l| l.starts_with("cimagectl: "))
            .unwrap_or_default()
            .to_string()
    }

    /// Writes `path` (relative to the home) with `text`, creating directories.
    pub fn write(&self, path: &str, text: &str) -> PathBuf {
        let full = self.dir.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(&full, text).unwrap();
        full
    }
}

/// An auth.json / config.json document with one `auths` entry.
pub fn auth_json(key: &str, user: &str, password: &str) -> String {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    serde_json::json!({"auths": {key: {"auth": auth}}}).to_string()
}

/// An auth.json / config.json document whose `auths` entry holds an identity token.
pub fn identity_token_json(key: &str, user: &str, token: &str) -> String {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
    serde_json::json!({"auths": {key: {"auth": auth, "identitytoken": token}}}).to_string()
}

/// A docker-credential-NAME script in `dir` that answers `get` for `registry` with the
/// credentials, logs each call to DIR/NAME.calls, and says "credentials not found" otherwise.
pub fn credential_helper(dir: &Path, name: &str, registry: &str, user: &str, password: &str) {
    fs::create_dir_all(dir).unwrap();
    let calls = dir.join(format!("{name}.calls"));
    let script = format!(
        "#!/bin/sh\n\
         [ \"$1\" = get ] || {{ echo \"unsupported: $1\" >&2; exit 1; }}\n\
         read -r server || true\n\
         echo \"$server\" >> '{calls}'\n\
         if [ \"$server\" = '{registry}' ]; then\n\
         \x20 printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}' \"$server\"\n\
         else\n\
         \x20 echo 'credentials not found in native keychain'\n\
         \x20 exit 1\n\
         fi\n",
        calls = calls.display()
    );
    let path = dir.join(format!("docker-credential-{name}"));
    fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// `PATH` with `dir` first.
pub fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    )
}

/// Options that make cimagectl read `registries_conf` (and no drop-in of the machine) and the
/// policy `policy` (accept anything when None), both written under `dir` with `tag` in their
/// names.
pub fn config_args(
    dir: &Path,
    tag: &str,
    registries_conf: &str,
    policy: Option<&str>,
) -> Vec<String> {
    fs::create_dir_all(dir).unwrap();
    let conf = dir.join(format!("{tag}-registries.conf"));
    fs::write(&conf, registries_conf).unwrap();
    let drop_ins = dir.join(format!("{tag}-registries.conf.d"));
    fs::create_dir_all(&drop_ins).unwrap();
    let policy_path = dir.join(format!("{tag}-policy.json"));
    fs::write(
        &policy_path,
        policy.unwrap_or(r#"{"default":[{"type":"insecureAcceptAnything"}]}"#),
    )
    .unwrap();
    vec![
        format!("--registries-conf={}", conf.display()),
        format!("--registries-conf-dir={}", drop_ins.display()),
        format!("--signature-policy={}", policy_path.display()),
    ]
}

/// `base` followed by `extra`, as the &str list cimagectl helpers take.
pub fn with<'a>(base: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
        .collect()
}
