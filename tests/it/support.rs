//! The test harness: a real `raccoond` on a temporary spool.
//!
//! [`TestSpool::builder`] writes a configuration, starts the built binary
//! and waits until it says it is ready; helpers drop jobs the ways users
//! do and wait for records with a deadline. Nothing here sleeps blindly:
//! every wait polls a condition until it holds or its deadline passes.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a test waits for something that should happen promptly.
pub const PROMPT: Duration = Duration::from_secs(15);

pub fn raccoond_bin() -> &'static str {
    env!("CARGO_BIN_EXE_raccoond")
}

pub fn raccoon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_raccoon")
}

/// The name of the user the tests run as (types must name it when root).
pub fn me() -> String {
    raccoond::config::current_user()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Polls `f` until it gives `Some`, or gives `None` once `timeout` has
/// passed. The one way tests wait: every other wait is built on it.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Waits until `f` gives `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_until(timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Fails the test unless it runs as root: the README's test command runs
/// the suite as root, and a test that needs it is never skipped.
pub fn require_root(why: &str) {
    assert!(
        is_root(),
        "this test needs root ({why}); run the suite as the README says (tests/run, as root)"
    );
}

/// The path of an outside tool the test needs; fails the test, naming the
/// package, when it is missing (tests/run installs it).
pub fn tool(name: &str, package: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!("{name} is not installed: apt-get install {package} (tests/run installs it)")
        })
}

pub struct Builder {
    top: String,
    types: Vec<(String, String)>,
    http: bool,
    env: Vec<(String, String)>,
    args: Vec<String>,
    fsync: bool,
    nofile: Option<u64>,
}

impl Builder {
    /// Top-level configuration lines (`total = 3`), written before the
    /// types; a table such as `[mail]` must come in the last `top` call.
    pub fn top(mut self, line: &str) -> Self {
        self.top.push_str(line);
        self.top.push('\n');
        self
    }

    /// A type with the given body (TOML lines). `user` is added as the
    /// current user unless the body sets it.
    pub fn ty(mut self, name: &str, body: &str) -> Self {
        self.types.push((name.to_string(), body.to_string()));
        self
    }

    /// A type whose command is `/bin/sh -c SCRIPT`.
    pub fn sh(self, name: &str, script: &str) -> Self {
        let body = format!("command = [\"/bin/sh\", \"-c\", {}]", toml_str(script));
        self.ty(name, &body)
    }

    pub fn http(mut self) -> Self {
        self.http = true;
        self
    }

    /// Starts the daemon with this soft limit on open files.
    pub fn soft_nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }

    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }

    /// The configuration text this builder writes.
    pub fn config_text(&self) -> String {
        let mut c = format!("fsync = {}\n", self.fsync);
        for (key, default) in [("kill_grace", "\"1s\""), ("stop_timeout", "\"5s\"")] {
            if !self.top.contains(key) {
                c.push_str(&format!("{key} = {default}\n"));
            }
        }
        c.push_str(&self.top);
        if self.http && !self.top.contains("[http]") {
            c.push_str("[http]\nlisten = \"127.0.0.1:0\"\n");
        }
        for (name, body) in &self.types {
            c.push_str(&format!("[types.{name}]\n{body}\n"));
            if !body.lines().any(|l| l.trim_start().starts_with("user")) {
                c.push_str(&format!("user = \"{}\"\n", me()));
            }
        }
        c
    }

    /// Writes the configuration and starts the daemon; waits until ready.
    pub fn start(self) -> TestSpool {
        let dir = tempfile::Builder::new()
            .prefix("raccoond-test.")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make a temporary folder: {e}"));
        let spool = dir.path().join("spool");
        let config = dir.path().join("raccoond.toml");
        let text = format!("spool = \"spool\"\n{}", self.config_text());
        fs::write(&config, text).unwrap_or_else(|e| panic!("write config: {e}"));
        let mut t = TestSpool {
            dir,
            spool,
            config,
            child: None,
            env: self.env,
            args: self.args,
            nofile: self.nofile,
            http_addr: None,
            runs: 0,
        };
        t.launch();
        t
    }
}

pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

pub struct TestSpool {
    pub dir: TempDir,
    pub spool: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    nofile: Option<u64>,
    pub http_addr: Option<String>,
    runs: usize,
}

impl TestSpool {
    pub fn builder() -> Builder {
        Builder {
            top: String::new(),
            types: Vec::new(),
            http: false,
            env: Vec::new(),
            args: Vec::new(),
            fsync: false,
            nofile: None,
        }
    }

    /// The stderr log of run `n` (from 0).
    pub fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("raccoond.{n}.log"))
    }

    /// Everything the daemon logged, over all its runs.
    pub fn log(&self) -> String {
        (0..self.runs)
            .map(|n| fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect()
    }

    /// Starts (or restarts) the daemon and waits until it is ready.
    pub fn launch(&mut self) {
        let n = self.runs;
        self.runs += 1;
        let log = fs::File::create(self.log_path(n)).unwrap_or_else(|e| panic!("log: {e}"));
        // With a soft limit to set, a shell sets it and execs the daemon.
        let mut command = match self.nofile {
            Some(n) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg(format!("ulimit -Sn {n} && exec \"$0\" \"$@\""))
                    .arg(raccoond_bin());
                c
            }
            None => Command::new(raccoond_bin()),
        };
        let child = command
            .arg("--config")
            .arg(&self.config)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start raccoond: {e}"));
        self.child = Some(child);
        let path = self.log_path(n);
        let ready = wait_for("raccoond to be ready", PROMPT, || {
            let text = fs::read_to_string(&path).unwrap_or_default();
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("raccoond exited with {status} before it was ready:\n{text}");
            }
            text.contains(": ready,").then_some(text)
        });
        self.http_addr = ready
            .lines()
            .find_map(|l| l.strip_prefix("http: listening on "))
            .map(str::to_string);
    }

    /// Like [`wait_for`], but a timeout shows the daemon's log too.
    pub fn wait_logged<T>(&self, what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
        poll_until(timeout, f).unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for {what}; the log:\n{}",
                self.log()
            )
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// The daemon's exit status once it has exited by itself (reaped
    /// here); `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status (with a deadline).
    pub fn stop(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let mut c = self
            .child
            .take()
            .unwrap_or_else(|| panic!("raccoond is not running"));
        wait_for("raccoond to exit", timeout, || c.try_wait().ok().flatten())
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.spool.join(rel)
    }

    /// Submits the maildir way: write in tmp/, rename into new/.
    pub fn drop_job(&self, name: &str, text: &str) {
        let tmp = self.path("tmp").join(format!("{name}.part"));
        fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        fs::rename(&tmp, self.path("new").join(name)).unwrap_or_else(|e| panic!("rename: {e}"));
    }

    /// Submits the `cp` way: written in place in new/.
    pub fn cp_job(&self, name: &str, text: &str) {
        let mut f =
            fs::File::create(self.path("new").join(name)).unwrap_or_else(|e| panic!("create: {e}"));
        f.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("write: {e}"));
    }

    pub fn record_path(&self, id: &str) -> PathBuf {
        self.path("done").join(format!("{id}.toml"))
    }

    /// Waits for `done/<id>.toml` and parses it.
    pub fn wait_record(&self, id: &str) -> toml::Table {
        self.wait_record_for(id, PROMPT)
    }

    pub fn wait_record_for(&self, id: &str, timeout: Duration) -> toml::Table {
        let path = self.record_path(id);
        wait_for(&format!("the record of {id}"), timeout, || {
            let text = fs::read_to_string(&path).ok()?;
            Some(
                toml::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: bad record: {e}\n{text}", path.display())),
            )
        })
    }

    /// All records in done/, by id.
    pub fn records(&self) -> Vec<(String, toml::Table)> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.path("done"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".toml") {
                let text = fs::read_to_string(e.path()).unwrap_or_default();
                let t: toml::Table =
                    toml::from_str(&text).unwrap_or_else(|err| panic!("{name}: {err}\n{text}"));
                out.push((id.to_string(), t));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Names in a spool folder (dot-files included).
    pub fn ls(&self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path(dir))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// Runs the client against this spool.
    pub fn client(&self, args: &[&str]) -> std::process::Output {
        Command::new(raccoon_bin())
            .args(args)
            .env("RACCOON_SPOOL", &self.spool)
            .output()
            .unwrap_or_else(|e| panic!("cannot run raccoon: {e}"))
    }

    /// The ids `raccoon --json list ARGS` prints, in its order.
    pub fn listed(&self, args: &[&str]) -> Vec<String> {
        let out = self.client(&[&["--json", "list"], args].concat());
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("raccoon list --json: {e}: {out:?}"));
        v.as_array()
            .unwrap_or_else(|| panic!("raccoon list --json: not a list: {v}"))
            .iter()
            .map(|j| j["id"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestSpool {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn status_of(t: &toml::Table) -> &str {
    t.get("status").and_then(|v| v.as_str()).unwrap_or("")
}

/// A loopback port that was free a moment ago, for a server a test starts
/// (or leaves unstarted, to play a server that is down).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

/// Whether something accepts connections on a loopback port.
pub fn port_open(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// What a bounded command run gave.
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to its end, killing it (and failing) after `PROMPT`.
pub fn run(cmd: &mut Command) -> Ran {
    let program = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = read(child.stdout.take().map(|p| Box::new(p) as _));
    let err = read(child.stderr.take().map(|p| Box::new(p) as _));
    let Some(status) = poll_until(PROMPT, || child.try_wait().ok().flatten()) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{program} did not finish within {PROMPT:?}");
    };
    Ran {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}
