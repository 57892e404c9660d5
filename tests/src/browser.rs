//! Headless Chromium for the tests of pages: one-shot `--dump-dom` and
//! `--screenshot` runs, and [`Browser`], a page driven over the Chrome
//! DevTools Protocol (start with `--remote-debugging-port=0`, find the
//! debugger's websocket on stderr, `Runtime.evaluate`, waits, screenshots),
//! plus JS snippets that work on any page. What a page's markup means stays
//! with that page's tests.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{client, get};
use crate::{bounded, temp_dir};

/// Chromium without a window, a sandbox or anything that talks to the
/// network on its own.
const HEADLESS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
];

/// A fresh profile per browser: two browsers on one profile make the second
/// hand its URL to the first and exit.
fn profile(kind: &str) -> PathBuf {
    static BROWSERS: AtomicUsize = AtomicUsize::new(0);
    temp_dir(&format!(
        "chromium-{kind}-{}",
        BROWSERS.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The DOM of `url` once its scripts ran (blocking: call it from
/// `spawn_blocking`).
pub fn dump_dom(binary: &Path, url: &str) -> String {
    run_headless(binary, url, "--dump-dom")
}

/// Writes a PNG of `url` to `path` (blocking: call it from `spawn_blocking`).
pub fn screenshot_to(binary: &Path, url: &str, path: &Path) {
    run_headless(binary, url, &format!("--screenshot={}", path.display()));
}

/// Runs headless Chromium on `url` once; `mode` is `--dump-dom` or
/// `--screenshot=PATH`. Virtual time lets a page's 1 s polls run without
/// waiting for them in real time.
fn run_headless(binary: &Path, url: &str, mode: &str) -> String {
    let profile = profile("run");
    // coreutils' timeout: a hung browser fails the test instead of hanging it.
    let output = Command::new("timeout")
        .arg("60")
        .arg(binary)
        .args(HEADLESS)
        .args([
            "--window-size=1280,720",
            "--virtual-time-budget=6000",
            "--timeout=30000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(url)
        .output()
        .expect("chromium starts");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium showing one page, driven over CDP; killed on drop.
pub struct Browser {
    child: Child,
    page: Socket,
    next_id: u64,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    /// Starts Chromium on `url` and connects to the page's debugger.
    pub async fn open(binary: &Path, url: &str, width: u32, height: u32) -> Browser {
        let profile = profile("cdp");
        let mut child = Command::new(binary)
            .args(HEADLESS)
            .arg("--remote-debugging-port=0")
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let browser_ws = debugger_address(&mut child).await;
        // ws://127.0.0.1:PORT/devtools/browser/ID -> http://127.0.0.1:PORT/json/list
        let host = browser_ws
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("host:port")
            .to_owned();
        let page_ws = page_target(&host).await;
        let (page, _) = bounded(
            Duration::from_secs(10),
            "connect to the page's debugger",
            tokio_tungstenite::connect_async(page_ws.as_str()),
        )
        .await
        .expect("CDP websocket");
        Browser {
            child,
            page,
            next_id: 0,
            profile,
        }
    }

    /// One CDP command; its result.
    pub async fn command(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params }).to_string();
        self.page
            .send(Message::Text(request.into()))
            .await
            .expect("CDP send");
        bounded(Duration::from_secs(30), method, async {
            loop {
                let message = self
                    .page
                    .next()
                    .await
                    .expect("CDP socket open")
                    .expect("CDP message");
                let Message::Text(text) = message else {
                    continue;
                };
                let reply: Value = serde_json::from_str(text.as_str()).expect("CDP JSON");
                if reply["id"] == id {
                    assert!(reply["error"].is_null(), "{method}: {reply}");
                    return reply["result"].clone();
                }
            }
        })
        .await
    }

    /// Evaluates `expression` in the page (promises awaited); its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .command(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is truthy (20 s at most); its value.
    pub async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let value = self.eval(expression).await;
            if !matches!(value, Value::Null | Value::Bool(false)) && value != json!("") {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "page never showed {what} ({expression})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the whole page as it is.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        let height = self.eval("document.documentElement.scrollHeight").await;
        let width = self.eval("document.documentElement.scrollWidth").await;
        let clip = json!({ "x": 0, "y": 0, "width": width, "height": height, "scale": 1 });
        let shot = self
            .command(
                "Page.captureScreenshot",
                json!({ "format": "png", "clip": clip, "captureBeyondViewport": true }),
            )
            .await;
        let data = shot["data"].as_str().expect("screenshot data");
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap_or_else(|e| panic!("screenshot data is not base64: {e}"))
    }
}

/// The browser's debugger websocket, which Chromium prints on stderr; the
/// rest of stderr is drained on the same thread so Chromium never blocks on
/// it.
async fn debugger_address(child: &mut Child) -> String {
    let stderr = child.stderr.take().expect("chromium stderr");
    let (found, listening) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(at) = line.find("ws://") {
                let _ = found.send(line[at..].trim().to_owned());
            }
        }
    });
    tokio::task::spawn_blocking(move || listening.recv_timeout(Duration::from_secs(30)))
        .await
        .expect("stderr reader")
        .expect("Chromium printed no 'DevTools listening on ws://…' line within 30 s")
}

/// The debugger websocket of the page tab, once the browser at `host` lists
/// one (20 s at most).
async fn page_target(host: &str) -> String {
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = get(&client, &format!("http://{host}/json/list"))
            .await
            .json();
        let page = list.as_array().and_then(|targets| {
            targets
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
        });
        if let Some(page) = page {
            return page;
        }
        assert!(Instant::now() < deadline, "no page target: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// JS: clicks `element` (an expression); true when it was there and
/// enabled.
pub fn click_js(element: &str) -> String {
    format!(
        "(() => {{ const b = {element}; if (!b || b.disabled) return false; b.click(); return true; }})()"
    )
}

/// JS: types `value` into the input `element` (an expression), as a user
/// would: the page hears the `input` event.
pub fn type_js(element: &str, value: &str) -> String {
    // A JSON string is a JS string literal, quotes and escapes included.
    let literal = Value::from(value).to_string();
    format!(
        "(() => {{ const i = {element}; i.value = {literal}; i.dispatchEvent(new Event('input')); }})()"
    )
}
