//! The registry constants against the IANA "STUN Parameters" registry, transcribed in
//! tests/data/iana-stun-parameters.txt: same values, same names, nothing invented, nothing
//! assigned by the IETF missing, and the comprehension ranges as IANA states them.

use stunedge::stun::registry::{self, Registered};

struct Row {
    registry: String,
    value: u16,
    name: String,
    reference: String,
}

fn rows() -> Vec<Row> {
    let text = include_str!("../data/iana-stun-parameters.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            assert_eq!(cols.len(), 4, "bad row {l:?}");
            let value = match cols[1].strip_prefix("0x") {
                Some(hex) => u16::from_str_radix(hex, 16).unwrap(),
                None => cols[1].parse().unwrap(),
            };
            Row { registry: cols[0].into(), value, name: cols[2].into(), reference: cols[3].into() }
        })
        .collect()
}

fn compare(which: &str, ours: &[Registered], required_below: u16) {
    let iana: Vec<Row> = rows().into_iter().filter(|r| r.registry == which).collect();
    assert!(!iana.is_empty());
    for row in &iana {
        let mine = ours.iter().find(|r| r.value == row.value);
        let reserved = row.name.starts_with("Reserved");
        match mine {
            Some(mine) if reserved => {
                // A value reserved since RFC 5389 that stunedge still names for RFC 3489/5780
                // clients: either called Reserved, or the name the registry says it "was".
                let was = row.name.split("was ").nth(1).and_then(|s| s.split(' ').next()).unwrap_or("");
                assert!(
                    mine.name.starts_with("Reserved") || mine.name == was,
                    "{which} {:#06x}: ours {:?}, IANA {:?}",
                    row.value,
                    mine.name,
                    row.name
                );
            }
            Some(mine) => assert_eq!(mine.name, row.name, "{which} {:#06x}", row.value),
            None => assert!(
                reserved || row.value >= required_below,
                "{which} {:#06x} {} is assigned by IANA but missing here",
                row.value,
                row.name
            ),
        }
        if let Some(mine) = mine {
            if let Some(rfc) = mine.reference.strip_prefix("RFC ") {
                assert!(
                    row.reference.contains(&format!("RFC{rfc}")),
                    "{which} {:#06x}: ours cites RFC {rfc}, IANA {}",
                    row.value,
                    row.reference
                );
            }
        }
    }
    for mine in ours {
        assert!(
            iana.iter().any(|r| r.value == mine.value),
            "{which} {:#06x} {} is not in the IANA registry",
            mine.value,
            mine.name
        );
    }
}

#[test]
fn methods_match_iana() {
    compare("method", registry::METHODS, u16::MAX);
}

#[test]
fn attributes_match_iana() {
    // Everything below the vendor (Expert Review, 0xC000) range must be known.
    compare("attribute", registry::ATTRIBUTES, 0xC000);
}

#[test]
fn error_codes_match_iana() {
    compare("error", registry::ERROR_CODES, u16::MAX);
}

#[test]
fn comprehension_ranges_match_iana() {
    // IANA: 0x0000-0x7FFF comprehension-required, 0x8000-0xFFFF comprehension-optional.
    for row in rows().iter().filter(|r| r.registry == "attribute") {
        assert_eq!(registry::is_comprehension_required(row.value), row.value <= 0x7FFF, "{:#06x}", row.value);
    }
}
