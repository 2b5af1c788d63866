//! Network allow entries: `address[/prefix]:port/protocol`.

use std::net::IpAddr;

use super::compiled::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, NetAllow};

/// Parses `127.0.0.1:8080/tcp`, `10.0.0.0/8:443/tcp`, `[::1]:53/udp` or `[fd00::/8]:53/udp`.
pub fn parse_allow(entry: &str) -> Result<NetAllow, String> {
    let form =
        "write `address[/prefix]:port/protocol`, e.g. `127.0.0.1:8080/tcp` or `[::1]:53/udp`";
    let (rest, proto) = entry
        .rsplit_once('/')
        .ok_or_else(|| format!("`{entry}` has no protocol; {form}"))?;
    let protocol = match proto {
        "tcp" => IPPROTO_TCP,
        "udp" => IPPROTO_UDP,
        other => return Err(format!("`{other}` is not a protocol: use `tcp` or `udp`")),
    };
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("`{entry}` has no port; {form}"))?;
    let port: u16 = match port.parse() {
        Ok(0) | Err(_) => return Err(format!("`{port}` is not a port (1 to 65535)")),
        Ok(port) => port,
    };
    let host = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .ok_or_else(|| format!("`{host}`: an IPv6 address in brackets lacks its `]`"))?,
        None if host.contains(':') => {
            return Err(format!(
                "`{host}`: write an IPv6 address in brackets, e.g. `[::1]:53/udp`"
            ));
        }
        None => host,
    };
    let (address, prefix) = match host.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (host, None),
    };
    let ip: IpAddr = address
        .parse()
        .map_err(|_| format!("`{address}` is not an IP address; {form}"))?;
    let (family, max_prefix, mut addr) = match ip {
        IpAddr::V4(v4) => {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&v4.octets());
            (AF_INET, 32u8, addr)
        }
        IpAddr::V6(v6) => (AF_INET6, 128u8, v6.octets()),
    };
    let prefix_len = match prefix {
        None => max_prefix,
        Some(text) => match text.parse::<u8>() {
            Ok(len) if len <= max_prefix => len,
            _ => {
                return Err(format!(
                    "`/{text}` is not a prefix length (0 to {max_prefix})"
                ));
            }
        },
    };
    let host_bits_set = mask_host_bits(&mut addr, prefix_len, max_prefix);
    if host_bits_set {
        return Err(format!(
            "`{host}` has bits set past its /{prefix_len} prefix; write the network address"
        ));
    }
    Ok(NetAllow {
        family,
        addr,
        prefix_len,
        port,
        protocol,
    })
}

/// Clears the bits past `prefix_len`; returns whether any were set.
fn mask_host_bits(addr: &mut [u8; 16], prefix_len: u8, max_prefix: u8) -> bool {
    let mut any = false;
    for bit in prefix_len..max_prefix {
        let (byte, mask) = (usize::from(bit / 8), 0x80u8 >> (bit % 8));
        any |= addr[byte] & mask != 0;
        addr[byte] &= !mask;
    }
    any
}

#[cfg(test)]
mod tests {
    use super::super::compiled::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
    use super::parse_allow;

    #[test]
    fn allow_entries_parse_to_map_ready_fields() {
        let host = parse_allow("127.0.0.1:8080/tcp").unwrap();
        assert_eq!(
            (host.family, host.prefix_len, host.port, host.protocol),
            (AF_INET, 32, 8080, IPPROTO_TCP)
        );
        assert_eq!(&host.addr[..4], &[127, 0, 0, 1]);
        assert_eq!(host.to_string(), "127.0.0.1:8080/tcp");
        let net = parse_allow("10.0.0.0/8:443/tcp").unwrap();
        assert_eq!(
            (net.prefix_len, net.to_string().as_str()),
            (8, "10.0.0.0/8:443/tcp")
        );
        let v6 = parse_allow("[::1]:53/udp").unwrap();
        assert_eq!(
            (v6.family, v6.prefix_len, v6.protocol),
            (AF_INET6, 128, IPPROTO_UDP)
        );
        assert_eq!(v6.to_string(), "[::1]:53/udp");
    }

    #[test]
    fn malformed_allow_entries_say_what_is_wrong() {
        assert!(
            parse_allow("127.0.0.1:8080")
                .unwrap_err()
                .contains("no protocol")
        );
        assert!(
            parse_allow("127.0.0.1:8080/sctp")
                .unwrap_err()
                .contains("not a protocol")
        );
        assert!(
            parse_allow("127.0.0.1/tcp")
                .unwrap_err()
                .contains("no port")
        );
        assert!(
            parse_allow("127.0.0.1:0/tcp")
                .unwrap_err()
                .contains("not a port")
        );
        assert!(parse_allow("::1:53/udp").unwrap_err().contains("brackets"));
        assert!(
            parse_allow("10.0.0.1/8:443/tcp")
                .unwrap_err()
                .contains("past its /8 prefix")
        );
        assert!(
            parse_allow("example.com:80/tcp")
                .unwrap_err()
                .contains("not an IP address")
        );
    }
}
