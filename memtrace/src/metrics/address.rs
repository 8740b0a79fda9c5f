//! `--metrics ADDR`: where the endpoint listens. A bare port or `:PORT` means loopback only; an
//! address must be given to serve the network (a `DaemonSet`'s `0.0.0.0:PORT`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Parses `PORT`, `:PORT`, `IP:PORT` or `[IPv6]:PORT`.
///
/// # Errors
///
/// A message saying what is expected, for clap to print.
pub fn parse_listen_address(value: &str) -> Result<SocketAddr, String> {
    let port_only = value.strip_prefix(':').unwrap_or(value);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    value.parse::<SocketAddr>().map_err(|_| {
        format!("{value:?} is not PORT, :PORT, IP:PORT or [IPv6]:PORT (e.g. 9750, 0.0.0.0:9750)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_alone_is_loopback() {
        for v in ["9750", ":9750"] {
            assert_eq!(
                parse_listen_address(v),
                Ok("127.0.0.1:9750".parse().expect("addr"))
            );
        }
    }

    #[test]
    fn an_address_is_taken_as_given() {
        assert_eq!(
            parse_listen_address("0.0.0.0:9750"),
            Ok("0.0.0.0:9750".parse().expect("addr"))
        );
        assert_eq!(
            parse_listen_address("[::1]:0"),
            Ok("[::1]:0".parse().expect("addr"))
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_expected_forms() {
        for v in ["", "localhost:9750", "70000", "1.2.3.4", ":x"] {
            let err = parse_listen_address(v).expect_err(v);
            assert!(err.contains("PORT"), "{err}");
        }
    }
}
