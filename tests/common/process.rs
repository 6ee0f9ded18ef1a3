//! The `vicinity serve` binary as a child process, and a loopback HTTP client for it: what the
//! tests that run the real binary (one server, or several nodes) share.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::tiny_dir;

/// Log lines kept per process, for the messages of failed assertions.
const LOG_LINES: usize = 300;

/// A response: status, headers and JSON body (`Null` when empty).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

/// A loopback HTTP client.
#[derive(Clone)]
pub(crate) struct Http(Client<HttpConnector, Full<Bytes>>);

impl Http {
    pub(crate) fn new() -> Http {
        Http(Client::builder(TokioExecutor::new()).build_http())
    }

    /// Sends a request with an optional JSON body; `Err` when no response comes (the server
    /// is down, or took longer than 30 s).
    pub(crate) async fn try_send(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, String> {
        let what = format!("{method} {path} on {addr}");
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            self.0.request(req.body(body).unwrap()),
        )
        .await
        .map_err(|_| format!("{what}: no answer within 30 s"))?
        .map_err(|e| format!("{what}: {e}"))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{what}: reading the body: {e}"))?
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{what}: the body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })?
        };
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Sends a request that must be answered.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Reply {
        self.try_send(addr, method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A running `vicinity serve` process and the address it listens on. Dropping it kills the
/// process, so that none outlives its test.
pub(crate) struct ServeProcess {
    /// A name for messages.
    name: String,
    child: Child,
    pub(crate) addr: SocketAddr,
    /// The last [`LOG_LINES`] lines it logged.
    log: Arc<Mutex<VecDeque<String>>>,
    /// Every line logged since it said it was ready.
    since_ready: Receiver<String>,
}

impl ServeProcess {
    /// Starts the binary on an ephemeral port with the tiny model over `data`, with `args`
    /// added, and waits, at most 60 s, until it logs that it is ready (the JSON line carries
    /// the bound address). Only the command line configures it, not the environment of the
    /// test run. Blocks.
    pub(crate) fn start(name: &str, data: &Path, args: &[OsString]) -> ServeProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vicinity"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("VICINITY_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args(["serve", "--addr", "127.0.0.1:0", "--log-format", "json"])
            // The tiny model reads 32 tokens; the default overlap is for real models.
            .args(["--chunk-overlap", "4"])
            .arg("--model")
            .arg(tiny_dir())
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        // The thread drains stderr for the process's whole life (a full pipe would stall its
        // logging), keeps the last lines, and hands every line to the wait for "ready".
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn({
            let log = log.clone();
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    {
                        let mut log = log.lock().unwrap();
                        if log.len() == LOG_LINES {
                            log.pop_front();
                        }
                        log.push_back(line.clone());
                    }
                    let _ = tx.send(line);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => break Err("it never said it was ready"),
                Err(RecvTimeoutError::Disconnected) => {
                    break Err("it exited before it was ready");
                }
            };
            // Lines that are not JSON (a clap error, a panic) stay in the log for the message.
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if entry["fields"]["message"] == "ready" {
                break entry["fields"]["addr"]
                    .as_str()
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                    .ok_or("the ready line names no address");
            }
        };
        match ready {
            Ok(addr) => ServeProcess {
                name: name.to_owned(),
                child,
                addr,
                log,
                since_ready: rx,
            },
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                let tail = log.lock().unwrap().iter().cloned().collect::<Vec<_>>();
                panic!("{name}: {why}; its log:\n{}", tail.join("\n"));
            }
        }
    }

    /// Kills the process with SIGKILL (what `Child::kill` sends on Unix), as a crash would.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("SIGKILL is delivered");
        self.child.wait().expect("the killed process is reaped");
    }

    /// Sends SIGTERM and waits, at most 30 s, for the process to exit; returns whether it
    /// exited with 0, and the lines it logged since it was ready.
    pub(crate) fn terminate(mut self) -> (bool, Vec<String>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{} did not stop within 30 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (exit.success(), self.since_ready.try_iter().collect())
    }

    /// The last lines the process logged, for assertion messages.
    pub(crate) fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        let skip = log.len().saturating_sub(40);
        let lines: Vec<&str> = log.iter().skip(skip).map(String::as_str).collect();
        format!(
            "{} ({}), last log lines:\n{}",
            self.name,
            self.addr,
            lines.join("\n")
        )
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
