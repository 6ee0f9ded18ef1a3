//! `vicinity healthcheck`: asks a running server whether it is ready, for container health
//! checks in an image that has no HTTP client. A plain HTTP/1.1 GET over a std socket.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};

/// Arguments of `vicinity healthcheck`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The server's address, HOST:PORT: the same variable `vicinity serve` listens on, so the
    /// check needs no configuration of its own. An unspecified host (0.0.0.0, [::]) is reached
    /// on loopback.
    #[arg(long, env = "VICINITY_ADDR", default_value = "0.0.0.0:8080")]
    addr: String,

    /// The path asked for; the check passes on a 200.
    #[arg(long, default_value = "/readyz")]
    path: String,

    /// How long connecting, sending and reading may each take, e.g. `3s`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Exits 0 when `GET path` answers 200, with an error (exit 1) otherwise.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let addr = target(&args.addr)?;
    let status = get_status(addr, &args.path, args.timeout)
        .with_context(|| format!("no answer from http://{addr}{}", args.path))?;
    if status != 200 {
        bail!("http://{addr}{} answered {status}", args.path);
    }
    Ok(())
}

/// Resolves `addr`, turning an unspecified host into loopback.
fn target(addr: &str) -> anyhow::Result<SocketAddr> {
    let mut resolved = addr
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    if resolved.ip().is_unspecified() {
        resolved.set_ip(match resolved.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(resolved)
}

/// Sends `GET path` and returns the response's status code.
fn get_status(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).context("cannot connect")?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .context("cannot send the request")?;
    // The status line is all we need: "HTTP/1.1 200 OK".
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < head.len() && !head[..len].contains(&b'\n') {
        let n = stream
            .read(&mut head[len..])
            .context("cannot read the response")?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let line = String::from_utf8_lossy(&head[..len]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {:?}", line.trim_end()))
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use super::*;

    /// A one-shot server answering `response` to the first connection.
    fn serve_once(response: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            // The whole request is read before answering: closing a socket with unread bytes
            // sends a reset, which the client may see instead of the answer.
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            conn.write_all(response.as_bytes()).unwrap();
        });
        addr
    }

    fn args(addr: SocketAddr) -> Args {
        Args {
            addr: addr.to_string(),
            path: "/readyz".into(),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn passes_on_200() {
        let addr = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        run(args(addr)).unwrap();
    }

    #[test]
    fn fails_on_503() {
        let addr = serve_once("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        let err = run(args(addr)).unwrap_err();
        assert!(format!("{err:#}").contains("answered 503"), "{err:#}");
    }

    #[test]
    fn fails_when_nothing_listens() {
        // Bind then drop: the port is free, so the connection is refused.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = run(args(addr)).unwrap_err();
        assert!(format!("{err:#}").contains("no answer"), "{err:#}");
    }

    #[test]
    fn fails_on_garbage() {
        let addr = serve_once("SSH-2.0-OpenSSH\r\n");
        let err = run(args(addr)).unwrap_err();
        assert!(
            format!("{err:#}").contains("not an HTTP response"),
            "{err:#}"
        );
    }

    #[test]
    fn unspecified_host_is_reached_on_loopback() {
        assert_eq!(
            target("0.0.0.0:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(target("[::]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(
            target("10.1.2.3:80").unwrap(),
            "10.1.2.3:80".parse().unwrap()
        );
    }
}
