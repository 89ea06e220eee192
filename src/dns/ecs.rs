//! EDNS Client Subnet (RFC 7871): checking the option a query carries, choosing the address
//! that locates the client, and the option echoed in the response.

use std::net::IpAddr;

use hickory_proto::op::Edns;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};

/// RFC 6891 OPT pseudo-RR type and RFC 7871 option code, for the raw scan.
const TYPE_OPT: u16 = 41;
const OPTION_ECS: u16 = 8;
/// FAMILY (2) + SOURCE PREFIX (1) + SCOPE PREFIX (1).
const ECS_FIXED_LEN: usize = 4;

/// Why a query's ECS option is rejected with FORMERR (RFC 7871 section 7.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcsProblem {
    /// ADDRESS has more octets than SOURCE PREFIX-LENGTH needs.
    AddressTooLong,
    /// ADDRESS has bits set beyond SOURCE PREFIX-LENGTH.
    BitsBeyondPrefix,
}

/// The query's ECS option, if any, after the checks hickory's parser leaves to us.
///
/// hickory-proto already fails the whole message (so the client gets FORMERR) for an unknown
/// FAMILY, a SOURCE PREFIX-LENGTH longer than the family allows and an ADDRESS with too few
/// octets; it silently ignores surplus octets, so those are found in the raw bytes.
pub fn query_subnet(edns: Option<&Edns>, raw: &[u8]) -> Result<Option<ClientSubnet>, EcsProblem> {
    let Some(EdnsOption::Subnet(subnet)) = edns.and_then(|e| e.option(EdnsCode::Subnet)) else {
        return Ok(None);
    };
    let needed = ECS_FIXED_LEN + usize::from(subnet.source_prefix()).div_ceil(8);
    if raw_ecs_len(raw).is_some_and(|len| len > needed) {
        return Err(EcsProblem::AddressTooLong);
    }
    if mask(subnet.addr(), subnet.source_prefix()) != subnet.addr() {
        return Err(EcsProblem::BitsBeyondPrefix);
    }
    Ok(Some(*subnet))
}

/// The address that locates the client: the ECS address when the query has ECS (none at all
/// when its source prefix is 0, RFC 7871 section 7.1.2), else the packet's source.
pub fn locating_address(subnet: Option<&ClientSubnet>, src: IpAddr) -> Option<IpAddr> {
    match subnet {
        Some(subnet) if subnet.source_prefix() == 0 => None,
        Some(subnet) => Some(subnet.addr()),
        None => Some(src),
    }
}

/// The option for the response: same family, source prefix and address, with the scope the
/// answer is valid for, never longer than the source prefix (RFC 7871 section 7.2.1).
pub fn response_option(subnet: &ClientSubnet, scope: u8) -> EdnsOption {
    let mut echo = *subnet;
    echo.set_scope_prefix(scope.min(subnet.source_prefix()));
    EdnsOption::Subnet(echo)
}

/// `addr` with every bit beyond `prefix` cleared.
pub fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((bits & keep).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((bits & keep).into())
        }
    }
}

/// OPTION-LENGTH of the first ECS option in the message's OPT record, read from the wire.
fn raw_ecs_len(raw: &[u8]) -> Option<usize> {
    let mut wire = Wire { raw, at: 12 };
    let count = |i: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *raw.get(i)?,
            *raw.get(i + 1)?,
        ])))
    };
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    for _ in 0..qd {
        wire.skip_name()?;
        wire.skip(4)?;
    }
    for _ in 0..an + ns {
        wire.skip_name()?;
        wire.skip(8)?;
        let len = wire.u16()?;
        wire.skip(usize::from(len))?;
    }
    for _ in 0..ar {
        wire.skip_name()?;
        let rtype = wire.u16()?;
        wire.skip(6)?;
        let len = usize::from(wire.u16()?);
        if rtype == TYPE_OPT {
            return ecs_in_options(raw.get(wire.at..wire.at.checked_add(len)?)?);
        }
        wire.skip(len)?;
    }
    None
}

fn ecs_in_options(mut options: &[u8]) -> Option<usize> {
    while options.len() >= 4 {
        let code = u16::from_be_bytes([options[0], options[1]]);
        let len = usize::from(u16::from_be_bytes([options[2], options[3]]));
        if code == OPTION_ECS {
            return Some(len);
        }
        options = options.get(4 + len..)?;
    }
    None
}

/// A read position in a raw message, every step bounds-checked.
struct Wire<'a> {
    raw: &'a [u8],
    at: usize,
}

impl Wire<'_> {
    fn skip(&mut self, n: usize) -> Option<()> {
        let next = self.at.checked_add(n)?;
        (next <= self.raw.len()).then(|| self.at = next)
    }

    fn u16(&mut self) -> Option<u16> {
        let value = u16::from_be_bytes([*self.raw.get(self.at)?, *self.raw.get(self.at + 1)?]);
        self.at += 2;
        Some(value)
    }

    /// Skips a name in place: labels up to the root, or up to a compression pointer.
    fn skip_name(&mut self) -> Option<()> {
        loop {
            let len = *self.raw.get(self.at)?;
            match len {
                0 => return self.skip(1),
                l if l & 0xC0 == 0xC0 => return self.skip(2),
                l => self.skip(1 + usize::from(l))?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::str::FromStr;

    /// A query with an OPT record whose only option is ECS with the given raw payload.
    fn query_with_ecs(payload: &[u8]) -> Vec<u8> {
        let mut message = Message::new(7, MessageType::Query, OpCode::Query);
        message.add_query(Query::query(
            Name::from_str("api.example.com.").unwrap(),
            RecordType::A,
        ));
        message.set_edns(Edns::new());
        let mut raw = message.to_vec().unwrap();
        // The OPT record is last: patch RDLENGTH and append the option.
        let len = raw.len();
        let rdlen = (4 + payload.len()) as u16;
        raw[len - 2..].copy_from_slice(&rdlen.to_be_bytes());
        raw.extend_from_slice(&OPTION_ECS.to_be_bytes());
        raw.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        raw.extend_from_slice(payload);
        raw
    }

    fn check(payload: &[u8]) -> Result<Option<ClientSubnet>, String> {
        let raw = query_with_ecs(payload);
        let message = Message::from_vec(&raw).map_err(|e| format!("parse: {e}"))?;
        query_subnet(message.edns.as_ref(), &raw).map_err(|p| format!("{p:?}"))
    }

    #[test]
    fn accepts_well_formed_option() {
        let subnet = check(&[0, 1, 24, 0, 192, 0, 2]).unwrap().unwrap();
        assert_eq!(subnet.addr(), IpAddr::from([192, 0, 2, 0]));
        assert_eq!(subnet.source_prefix(), 24);
        let zero = check(&[0, 2, 0, 0]).unwrap().unwrap();
        assert_eq!(
            locating_address(Some(&zero), IpAddr::from([1, 1, 1, 1])),
            None
        );
    }

    #[test]
    fn rejects_malformed_options() {
        assert_eq!(
            check(&[0, 1, 24, 0, 192, 0, 2, 0]).unwrap_err(),
            "AddressTooLong"
        );
        assert_eq!(
            check(&[0, 1, 22, 0, 192, 0, 3]).unwrap_err(),
            "BitsBeyondPrefix"
        );
        assert!(
            check(&[0, 3, 24, 0, 192, 0, 2])
                .unwrap_err()
                .starts_with("parse"),
            "bad family"
        );
        assert!(
            check(&[0, 1, 33, 0, 192, 0, 2, 0, 0])
                .unwrap_err()
                .starts_with("parse"),
            "prefix too long"
        );
        assert!(
            check(&[0, 1, 24, 0, 192]).unwrap_err().starts_with("parse"),
            "address too short"
        );
    }

    #[test]
    fn echo_caps_scope_at_source_prefix() {
        let subnet = ClientSubnet::new(IpAddr::from([192, 0, 2, 0]), 20, 0);
        let EdnsOption::Subnet(echo) = response_option(&subnet, 24) else {
            panic!()
        };
        assert_eq!(
            (echo.source_prefix(), echo.scope_prefix(), echo.addr()),
            (20, 20, subnet.addr())
        );
    }

    #[test]
    fn mask_clears_host_bits() {
        assert_eq!(
            mask("192.0.2.255".parse().unwrap(), 25),
            "192.0.2.128".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            mask("2001:db8::1".parse().unwrap(), 0),
            "::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            mask("2001:db8::1".parse().unwrap(), 128),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }
}
