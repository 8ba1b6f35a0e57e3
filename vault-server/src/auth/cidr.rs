//! CIDR blocks for `bound_cidrs` / `secret_id_bound_cidrs` / `token_bound_cidrs`.

use std::net::IpAddr;

/// A parsed CIDR block (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parse `10.0.0.0/8`, `::1/128` or `127.0.0.1`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    /// Does the block contain `ip`? (IPv4-mapped IPv6 addresses count as IPv4.)
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Is every CIDR of `inner` inside some CIDR of `outer`? (A child token may
/// narrow its parent's binding, never widen it.) Unparsable entries count
/// as outside.
pub fn within(inner: &[String], outer: &[String]) -> bool {
    let outer: Vec<Cidr> = outer.iter().filter_map(|c| Cidr::parse(c)).collect();
    inner
        .iter()
        .all(|c| Cidr::parse(c).is_some_and(|c| outer.iter().any(|o| o.prefix <= c.prefix && o.contains(c.addr))))
}

/// Validate a list of CIDR strings, naming the first bad one.
pub fn validate(list: &[String]) -> Result<(), String> {
    match list.iter().find(|c| Cidr::parse(c).is_none()) {
        Some(bad) => Err(format!("invalid CIDR block \"{bad}\"")),
        None => Ok(()),
    }
}

/// Is `ip` allowed by `list`? An empty list allows everything; a missing
/// address is refused when the list is not empty.
pub fn allowed(list: &[String], ip: Option<IpAddr>) -> bool {
    if list.is_empty() {
        return true;
    }
    let Some(ip) = ip else { return false };
    list.iter().filter_map(|c| Cidr::parse(c)).any(|c| c.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_only() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(within(&l(&["10.1.0.0/16", "10.2.3.4"]), &l(&["10.0.0.0/8"])));
        assert!(!within(&l(&["0.0.0.0/0"]), &l(&["10.0.0.0/8"])));
        assert!(!within(&l(&["10.0.0.0/7"]), &l(&["10.0.0.0/8"])), "wider than the parent");
        assert!(!within(&l(&["192.168.0.1"]), &l(&["10.0.0.0/8"])));
        assert!(!within(&l(&["garbage"]), &l(&["10.0.0.0/8"])));
    }

    #[test]
    fn matching() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(Cidr::parse("10.0.0.0/8").unwrap().contains(ip("10.1.2.3")));
        assert!(!Cidr::parse("10.0.0.0/8").unwrap().contains(ip("11.0.0.1")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::1/128").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("127.0.0.0/8").unwrap().contains(ip("::ffff:127.0.0.1")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope").is_none());
        assert!(allowed(&[], None));
        assert!(!allowed(&["10.0.0.0/8".into()], None));
        assert!(validate(&["1.2.3.4/40".into()]).is_err());
    }
}
