//! The STUN parameter registries (IANA "Session Traversal Utilities for NAT (STUN) Parameters"):
//! message methods, message classes, attribute types and error codes, with the RFC that defines
//! each. This module only names numbers; it never parses bytes.

/// The fixed value of bytes 4..8 of every RFC 5389/8489 message (RFC 8489 §5). A message whose
/// bytes 4..8 differ is an RFC 3489 "classic" message whose transaction ID is all 16 bytes.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// The STUN header is 20 bytes: type (2), length (2), magic cookie (4), transaction ID (12).
pub const HEADER_LEN: usize = 20;

/// Each attribute starts with type (2) and length (2) (RFC 8489 §14).
pub const ATTR_HEADER_LEN: usize = 4;

/// FINGERPRINT is the CRC-32 of the message XOR-ed with this value (RFC 8489 §14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Attribute types below this value are comprehension-required (RFC 8489 §14, §18.3).
pub const COMPREHENSION_OPTIONAL_START: u16 = 0x8000;

/// Whether an agent that does not understand `attr_type` must reject the message with 420.
#[inline]
pub const fn is_comprehension_required(attr_type: u16) -> bool {
    attr_type < COMPREHENSION_OPTIONAL_START
}

/// The class of a STUN message: the C1 and C0 bits of the message type (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// `0b00`
    Request,
    /// `0b01`
    Indication,
    /// `0b10`
    SuccessResponse,
    /// `0b11`
    ErrorResponse,
}

impl Class {
    /// The two class bits, C1 C0.
    #[inline]
    pub const fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::SuccessResponse => 0b10,
            Class::ErrorResponse => 0b11,
        }
    }

    /// The class whose C1 C0 bits are the low two bits of `bits`.
    #[inline]
    pub const fn from_bits(bits: u16) -> Class {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::SuccessResponse,
            _ => Class::ErrorResponse,
        }
    }
}

/// A message type: a 12-bit method interleaved with the two class bits (RFC 8489 §5, figure 3):
/// `M11..M7 C1 M6..M4 C0 M3..M0` in the low 14 bits of the first two header bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// The 12-bit method (`METHOD_*`).
    pub method: u16,
    /// The class.
    pub class: Class,
}

impl MessageType {
    /// Binding request, `0x0001`.
    pub const BINDING_REQUEST: MessageType = MessageType::new(METHOD_BINDING, Class::Request);
    /// Binding success response, `0x0101`.
    pub const BINDING_SUCCESS: MessageType = MessageType::new(METHOD_BINDING, Class::SuccessResponse);
    /// Binding error response, `0x0111`.
    pub const BINDING_ERROR: MessageType = MessageType::new(METHOD_BINDING, Class::ErrorResponse);
    /// Binding indication, `0x0011`.
    pub const BINDING_INDICATION: MessageType = MessageType::new(METHOD_BINDING, Class::Indication);

    /// A message type from its parts; only the low 12 bits of `method` are used.
    #[inline]
    pub const fn new(method: u16, class: Class) -> MessageType {
        MessageType { method: method & 0x0FFF, class }
    }

    /// Decodes the first two header bytes (the top two bits must already be known to be zero).
    #[inline]
    pub const fn from_u16(raw: u16) -> MessageType {
        let method = (raw & 0x000F) | ((raw >> 1) & 0x0070) | ((raw >> 2) & 0x0F80);
        let class = ((raw >> 4) & 0b01) | ((raw >> 7) & 0b10);
        MessageType { method, class: Class::from_bits(class) }
    }

    /// Encodes into the first two header bytes.
    #[inline]
    pub const fn to_u16(self) -> u16 {
        let m = self.method;
        let c = self.class.bits();
        (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
    }

    /// The same method with another class (a request's response type).
    #[inline]
    pub const fn with_class(self, class: Class) -> MessageType {
        MessageType { method: self.method, class }
    }
}

/// One row of a registry: value, the RFC's spelling, and the defining document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The registered value.
    pub value: u16,
    /// The name as the RFC spells it.
    pub name: &'static str,
    /// The defining document.
    pub reference: &'static str,
}

macro_rules! registry {
    ($table:ident, $lookup:ident, $known:ident, $what:literal;
     $( $(#[doc = $doc:literal])* $konst:ident = $value:literal, $name:literal, $reference:literal; )*) => {
        $( $(#[doc = $doc])* #[doc = concat!("`", $name, "` (", $reference, ").")]
           pub const $konst: u16 = $value; )*
        #[doc = concat!("Every ", $what, " stunedge knows, in registry order.")]
        pub const $table: &[Registered] = &[
            $( Registered { value: $value, name: $name, reference: $reference }, )*
        ];
        #[doc = concat!("The registry row of a ", $what, ", if stunedge knows it.")]
        pub fn $lookup(value: u16) -> Option<&'static Registered> {
            $table.iter().find(|r| r.value == value)
        }
        #[doc = concat!("Whether stunedge knows this ", $what, " (a `match`, cheap on the packet path).")]
        #[inline]
        pub const fn $known(value: u16) -> bool {
            matches!(value, $($value)|*)
        }
    };
}

registry! { METHODS, method, is_known_method, "method";
    METHOD_BINDING = 0x001, "Binding", "RFC 8489";
    /// RFC 3489's Shared Secret; reserved since RFC 5389.
    METHOD_SHARED_SECRET = 0x002, "Reserved; was SharedSecret", "RFC 8489";
    METHOD_ALLOCATE = 0x003, "Allocate", "RFC 8656";
    METHOD_REFRESH = 0x004, "Refresh", "RFC 8656";
    METHOD_SEND = 0x006, "Send", "RFC 8656";
    METHOD_DATA = 0x007, "Data", "RFC 8656";
    METHOD_CREATE_PERMISSION = 0x008, "CreatePermission", "RFC 8656";
    METHOD_CHANNEL_BIND = 0x009, "ChannelBind", "RFC 8656";
    METHOD_CONNECT = 0x00A, "Connect", "RFC 6062";
    METHOD_CONNECTION_BIND = 0x00B, "ConnectionBind", "RFC 6062";
    METHOD_CONNECTION_ATTEMPT = 0x00C, "ConnectionAttempt", "RFC 6062";
    METHOD_GOOG_PING = 0x080, "GOOG-PING", "Jonas_Oreland (Google)";
}

registry! { ATTRIBUTES, attribute, is_known_attribute, "attribute type";
    // Comprehension-required range, 0x0000-0x7FFF.
    ATTR_MAPPED_ADDRESS = 0x0001, "MAPPED-ADDRESS", "RFC 8489";
    /// RFC 3489 only; stunedge never sends a response to a third address.
    ATTR_RESPONSE_ADDRESS = 0x0002, "Reserved; was RESPONSE-ADDRESS", "RFC 8489";
    ATTR_CHANGE_REQUEST = 0x0003, "CHANGE-REQUEST", "RFC 5780";
    /// RFC 3489 §11.2.3, answered to classic clients.
    ATTR_SOURCE_ADDRESS = 0x0004, "Reserved; was SOURCE-ADDRESS", "RFC 8489";
    /// RFC 3489 §11.2.3, answered to classic clients.
    ATTR_CHANGED_ADDRESS = 0x0005, "Reserved; was CHANGED-ADDRESS", "RFC 8489";
    ATTR_USERNAME = 0x0006, "USERNAME", "RFC 8489";
    ATTR_PASSWORD = 0x0007, "Reserved; was PASSWORD", "RFC 8489";
    ATTR_MESSAGE_INTEGRITY = 0x0008, "MESSAGE-INTEGRITY", "RFC 8489";
    ATTR_ERROR_CODE = 0x0009, "ERROR-CODE", "RFC 8489";
    ATTR_UNKNOWN_ATTRIBUTES = 0x000A, "UNKNOWN-ATTRIBUTES", "RFC 8489";
    ATTR_REFLECTED_FROM = 0x000B, "Reserved; was REFLECTED-FROM", "RFC 8489";
    ATTR_CHANNEL_NUMBER = 0x000C, "CHANNEL-NUMBER", "RFC 8656";
    ATTR_LIFETIME = 0x000D, "LIFETIME", "RFC 8656";
    ATTR_BANDWIDTH = 0x0010, "Reserved; was BANDWIDTH", "RFC 8656";
    ATTR_XOR_PEER_ADDRESS = 0x0012, "XOR-PEER-ADDRESS", "RFC 8656";
    ATTR_DATA = 0x0013, "DATA", "RFC 8656";
    ATTR_REALM = 0x0014, "REALM", "RFC 8489";
    ATTR_NONCE = 0x0015, "NONCE", "RFC 8489";
    ATTR_XOR_RELAYED_ADDRESS = 0x0016, "XOR-RELAYED-ADDRESS", "RFC 8656";
    ATTR_REQUESTED_ADDRESS_FAMILY = 0x0017, "REQUESTED-ADDRESS-FAMILY", "RFC 8656";
    ATTR_EVEN_PORT = 0x0018, "EVEN-PORT", "RFC 8656";
    ATTR_REQUESTED_TRANSPORT = 0x0019, "REQUESTED-TRANSPORT", "RFC 8656";
    ATTR_DONT_FRAGMENT = 0x001A, "DONT-FRAGMENT", "RFC 8656";
    ATTR_ACCESS_TOKEN = 0x001B, "ACCESS-TOKEN", "RFC 7635";
    ATTR_MESSAGE_INTEGRITY_SHA256 = 0x001C, "MESSAGE-INTEGRITY-SHA256", "RFC 8489";
    ATTR_PASSWORD_ALGORITHM = 0x001D, "PASSWORD-ALGORITHM", "RFC 8489";
    ATTR_USERHASH = 0x001E, "USERHASH", "RFC 8489";
    ATTR_XOR_MAPPED_ADDRESS = 0x0020, "XOR-MAPPED-ADDRESS", "RFC 8489";
    ATTR_TIMER_VAL = 0x0021, "Reserved; was TIMER-VAL", "RFC 8656";
    ATTR_RESERVATION_TOKEN = 0x0022, "RESERVATION-TOKEN", "RFC 8656";
    ATTR_PRIORITY = 0x0024, "PRIORITY", "RFC 8445";
    ATTR_USE_CANDIDATE = 0x0025, "USE-CANDIDATE", "RFC 8445";
    ATTR_PADDING = 0x0026, "PADDING", "RFC 5780";
    ATTR_RESPONSE_PORT = 0x0027, "RESPONSE-PORT", "RFC 5780";
    ATTR_CONNECTION_ID = 0x002A, "CONNECTION-ID", "RFC 6062";
    // Comprehension-optional range, 0x8000-0xFFFF.
    ATTR_ADDITIONAL_ADDRESS_FAMILY = 0x8000, "ADDITIONAL-ADDRESS-FAMILY", "RFC 8656";
    ATTR_ADDRESS_ERROR_CODE = 0x8001, "ADDRESS-ERROR-CODE", "RFC 8656";
    ATTR_PASSWORD_ALGORITHMS = 0x8002, "PASSWORD-ALGORITHMS", "RFC 8489";
    ATTR_ALTERNATE_DOMAIN = 0x8003, "ALTERNATE-DOMAIN", "RFC 8489";
    ATTR_ICMP = 0x8004, "ICMP", "RFC 8656";
    ATTR_SOFTWARE = 0x8022, "SOFTWARE", "RFC 8489";
    ATTR_ALTERNATE_SERVER = 0x8023, "ALTERNATE-SERVER", "RFC 8489";
    ATTR_TRANSACTION_TRANSMIT_COUNTER = 0x8025, "TRANSACTION_TRANSMIT_COUNTER", "RFC 7982";
    ATTR_CACHE_TIMEOUT = 0x8027, "CACHE-TIMEOUT", "RFC 5780";
    ATTR_FINGERPRINT = 0x8028, "FINGERPRINT", "RFC 8489";
    ATTR_ICE_CONTROLLED = 0x8029, "ICE-CONTROLLED", "RFC 8445";
    ATTR_ICE_CONTROLLING = 0x802A, "ICE-CONTROLLING", "RFC 8445";
    ATTR_RESPONSE_ORIGIN = 0x802B, "RESPONSE-ORIGIN", "RFC 5780";
    ATTR_OTHER_ADDRESS = 0x802C, "OTHER-ADDRESS", "RFC 5780";
    ATTR_ECN_CHECK = 0x802D, "ECN-CHECK STUN", "RFC 6679";
    ATTR_THIRD_PARTY_AUTHORIZATION = 0x802E, "THIRD-PARTY-AUTHORIZATION", "RFC 7635";
    ATTR_MOBILITY_TICKET = 0x8030, "MOBILITY-TICKET", "RFC 8016";
}

registry! { ERROR_CODES, error_code, is_known_error_code, "error code";
    ERR_TRY_ALTERNATE = 300, "Try Alternate", "RFC 8489";
    ERR_BAD_REQUEST = 400, "Bad Request", "RFC 8489";
    ERR_UNAUTHENTICATED = 401, "Unauthenticated", "RFC 8489";
    ERR_FORBIDDEN = 403, "Forbidden", "RFC 8656";
    ERR_MOBILITY_FORBIDDEN = 405, "Mobility Forbidden", "RFC 8016";
    ERR_UNKNOWN_ATTRIBUTE = 420, "Unknown Attribute", "RFC 8489";
    ERR_ALLOCATION_MISMATCH = 437, "Allocation Mismatch", "RFC 8656";
    ERR_STALE_NONCE = 438, "Stale Nonce", "RFC 8489";
    ERR_ADDRESS_FAMILY_NOT_SUPPORTED = 440, "Address Family not Supported", "RFC 8656";
    ERR_WRONG_CREDENTIALS = 441, "Wrong Credentials", "RFC 8656";
    ERR_UNSUPPORTED_TRANSPORT_PROTOCOL = 442, "Unsupported Transport Protocol", "RFC 8656";
    ERR_PEER_ADDRESS_FAMILY_MISMATCH = 443, "Peer Address Family Mismatch", "RFC 8656";
    ERR_CONNECTION_ALREADY_EXISTS = 446, "Connection Already Exists", "RFC 6062";
    ERR_CONNECTION_TIMEOUT_OR_FAILURE = 447, "Connection Timeout or Failure", "RFC 6062";
    ERR_ALLOCATION_QUOTA_REACHED = 486, "Allocation Quota Reached", "RFC 8656";
    ERR_ROLE_CONFLICT = 487, "Role Conflict", "RFC 8445";
    ERR_SERVER_ERROR = 500, "Server Error", "RFC 8489";
    ERR_INSUFFICIENT_CAPACITY = 508, "Insufficient Capacity", "RFC 8656";
}

/// PASSWORD-ALGORITHM values (RFC 8489 §18.5).
pub const PASSWORD_ALGORITHM_MD5: u16 = 0x0001;
/// PASSWORD-ALGORITHM SHA-256 (RFC 8489 §18.5).
pub const PASSWORD_ALGORITHM_SHA256: u16 = 0x0002;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_bits_follow_figure_3() {
        // RFC 8489 §5: Binding request 0x0001, success 0x0101, error 0x0111, indication 0x0011.
        assert_eq!(MessageType::BINDING_REQUEST.to_u16(), 0x0001);
        assert_eq!(MessageType::BINDING_SUCCESS.to_u16(), 0x0101);
        assert_eq!(MessageType::BINDING_ERROR.to_u16(), 0x0111);
        assert_eq!(MessageType::BINDING_INDICATION.to_u16(), 0x0011);
        // RFC 8656: Allocate error 0x0113, Send indication 0x0016.
        assert_eq!(MessageType::new(METHOD_ALLOCATE, Class::ErrorResponse).to_u16(), 0x0113);
        assert_eq!(MessageType::new(METHOD_SEND, Class::Indication).to_u16(), 0x0016);
        for raw in 0..0x4000u16 {
            assert_eq!(MessageType::from_u16(raw).to_u16(), raw);
        }
    }

    #[test]
    fn comprehension_ranges() {
        assert!(is_comprehension_required(ATTR_XOR_MAPPED_ADDRESS));
        assert!(is_comprehension_required(0x7FFF));
        assert!(!is_comprehension_required(ATTR_FINGERPRINT));
        assert!(!is_comprehension_required(0x8000));
    }

    #[test]
    fn tables_are_sorted_and_unique() {
        for table in [METHODS, ATTRIBUTES, ERROR_CODES] {
            for pair in table.windows(2) {
                assert!(pair[0].value < pair[1].value, "{:?} before {:?}", pair[0], pair[1]);
            }
            for row in table {
                assert_eq!(table.iter().filter(|r| r.value == row.value).count(), 1);
            }
        }
        assert!(is_known_attribute(ATTR_PRIORITY));
        assert!(!is_known_attribute(0x0023));
        assert_eq!(attribute(ATTR_SOFTWARE).map(|r| r.name), Some("SOFTWARE"));
        assert_eq!(error_code(420).map(|r| r.name), Some("Unknown Attribute"));
    }
}
