//! CIDR blocks for `bound_cidrs` / `secret_id_bound_cidrs` / `token_bound_cidrs`.
//!
//! Parsing and matching are `ipnet`'s; this module adds the two rules the
//! callers rely on: a bare address is a block of one (/32 or /128), and an
//! IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack listener
//! reports for an IPv4 client) counts as the IPv4 address it carries, both
//! as a client address and in a block written in that form.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};

/// A parsed CIDR block (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr(IpNet);

/// `::ffff:0:0/96`: the IPv4-mapped addresses.
const MAPPED_PREFIX: u8 = 96;

/// The address an IPv4-mapped IPv6 address stands for; others unchanged.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Cidr {
    /// Parse `10.0.0.0/8`, `::1/128` or `127.0.0.1` (surrounding blanks
    /// ignored). Host bits may be set (`10.1.2.3/8` is `10.0.0.0/8`), as
    /// Vault accepts them.
    pub(crate) fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        let net = match IpNet::from_str(s) {
            Ok(net) => net,
            Err(_) => IpNet::from(IpAddr::from_str(s).ok()?),
        };
        Some(Cidr(Self::unmap_net(net)))
    }

    /// A block inside `::ffff:0:0/96` is the IPv4 block it maps (so
    /// `::ffff:10.0.0.0/104` is `10.0.0.0/8`); a wider one stays IPv6.
    fn unmap_net(net: IpNet) -> IpNet {
        match (unmap(net.addr()), net.prefix_len().checked_sub(MAPPED_PREFIX)) {
            (IpAddr::V4(v4), Some(len)) if net.addr().is_ipv6() => Ipv4Net::new(v4, len).map_or(net, IpNet::V4),
            _ => net,
        }
    }

    /// Does the block contain `ip`? (IPv4-mapped IPv6 addresses count as IPv4.)
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&unmap(ip))
    }

    /// Does this block contain every address of `inner`?
    fn covers(&self, inner: &Cidr) -> bool {
        self.0.contains(&inner.0)
    }
}

/// Is every CIDR of `inner` inside some CIDR of `outer`? (A child token may
/// narrow its parent's binding, never widen it.) Unparsable entries count
/// as outside.
pub(crate) fn within(inner: &[String], outer: &[String]) -> bool {
    let outer: Vec<Cidr> = outer.iter().filter_map(|c| Cidr::parse(c)).collect();
    inner.iter().all(|c| Cidr::parse(c).is_some_and(|c| outer.iter().any(|o| o.covers(&c))))
}

/// Validate a list of CIDR strings, naming the first bad one.
pub(crate) fn validate(list: &[String]) -> Result<(), String> {
    match list.iter().find(|c| Cidr::parse(c).is_none()) {
        Some(bad) => Err(format!("invalid CIDR block \"{bad}\"")),
        None => Ok(()),
    }
}

/// Is `ip` allowed by `list`? An empty list allows everything; a missing
/// address is refused when the list is not empty.
pub(crate) fn allowed(list: &[String], ip: Option<IpAddr>) -> bool {
    if list.is_empty() {
        return true;
    }
    let Some(ip) = ip else { return false };
    list.iter().filter_map(|c| Cidr::parse(c)).any(|c| c.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn narrowing_only() {
        assert!(within(&l(&["10.1.0.0/16", "10.2.3.4"]), &l(&["10.0.0.0/8"])));
        assert!(!within(&l(&["0.0.0.0/0"]), &l(&["10.0.0.0/8"])));
        assert!(!within(&l(&["10.0.0.0/7"]), &l(&["10.0.0.0/8"])), "wider than the parent");
        assert!(!within(&l(&["192.168.0.1"]), &l(&["10.0.0.0/8"])));
        assert!(!within(&l(&["garbage"]), &l(&["10.0.0.0/8"])));
        // Host bits set on the inner block: it is still the /16 it names.
        assert!(within(&l(&["10.1.2.3/16"]), &l(&["10.0.0.0/8"])));
        assert!(!within(&l(&["11.1.2.3/16"]), &l(&["10.0.0.0/8"])));
        // IPv4-mapped blocks and addresses are the IPv4 ones they carry.
        assert!(within(&l(&["::ffff:10.1.2.3"]), &l(&["10.0.0.0/8"])));
        assert!(within(&l(&["10.1.2.3"]), &l(&["::ffff:10.0.0.0/104"])));
        assert!(!within(&l(&["::ffff:10.1.2.3/96"]), &l(&["10.0.0.0/8"])), "/96 of mapped space is all of IPv4");
        assert!(!within(&l(&["::1"]), &l(&["0.0.0.0/0"])), "families never mix");
        assert!(within(&l(&[]), &l(&[])));
        assert!(!within(&l(&["10.0.0.1"]), &l(&[])));
    }

    #[test]
    fn matching() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(Cidr::parse("10.0.0.0/8").unwrap().contains(ip("10.1.2.3")));
        assert!(!Cidr::parse("10.0.0.0/8").unwrap().contains(ip("11.0.0.1")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(!Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.2")), "a bare address is a /32");
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::1/128").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(!Cidr::parse("::1").unwrap().contains(ip("::2")), "a bare address is a /128");
        assert!(Cidr::parse("2001:db8::/32").unwrap().contains(ip("2001:db8:1::5")));
        assert!(!Cidr::parse("2001:db8::/32").unwrap().contains(ip("2001:db9::5")));
        assert!(Cidr::parse("127.0.0.0/8").unwrap().contains(ip("::ffff:127.0.0.1")));
        assert!(Cidr::parse("::ffff:127.0.0.0/104").unwrap().contains(ip("127.0.0.1")));
        assert!(!Cidr::parse("::/0").unwrap().contains(ip("1.2.3.4")), "an IPv6 block never holds IPv4");
        assert!(!Cidr::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
        assert!(Cidr::parse(" 10.0.0.0/8 ").is_some(), "surrounding blanks");
        for bad in ["10.0.0.0/33", "::/129", "nope", "", "10.0.0.0/", "/8", "10.0.0/8", "10.0.0.0/8/8", "10.0.0.0 /8"] {
            assert!(Cidr::parse(bad).is_none(), "{bad:?}");
        }
        assert!(allowed(&[], None));
        assert!(!allowed(&["10.0.0.0/8".into()], None));
        assert!(allowed(&l(&["junk", "10.0.0.0/8"]), Some(ip("10.0.0.1"))), "junk entries are skipped");
        assert!(!allowed(&l(&["junk"]), Some(ip("10.0.0.1"))));
        assert!(validate(&["1.2.3.4/40".into()]).is_err());
        assert_eq!(validate(&l(&["10.0.0.0/8", "x"])).unwrap_err(), "invalid CIDR block \"x\"");
        validate(&l(&["10.0.0.0/8", "::1", "fe80::/10"])).unwrap();
    }
}
