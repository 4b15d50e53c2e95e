//! SOAP, the control part of UPnP, without sockets: the request natt sends for an action
//! ([`encode_request`], with its `SOAPAction` header, [`soap_action`]) and the reading of the
//! gateway's answer ([`parse_response`]): the action's output arguments, or the UPnP error
//! of a fault. The HTTP exchange itself is natt-upnp's `gateway` module.
//!
//! Answers are untrusted: they are read with natt's own hardened XML reader (at most
//! [`MAX_SOAP_BYTES`], UTF-8 only, no DTD so no entity expansion, bounded depth and text), so
//! any bytes give a [`Response`] or a [`SoapError`], never a panic, with work and memory
//! linear in the (bounded) size. (natt used to leave SOAP to `igd-next`: why no longer, see
//! the [crate documentation](crate), **Why not `igd-next`**.)
//!
//! Only what UPnP IGD actions need is read: the answer's `Envelope/Body/{action}Response`
//! element and the text of its children (the output arguments), or
//! `Envelope/Body/Fault/detail/UPnPError` with its `errorCode` and `errorDescription`.
//! Namespace prefixes are ignored (gateways spell them differently).

use crate::error::shorten;
use crate::xml_reader::{self, Event, Limits, XmlError};

/// The largest SOAP answer natt reads (the answers of the actions natt uses are well under a
/// kilobyte).
pub const MAX_SOAP_BYTES: usize = 64 * 1024;

/// What SOAP answers are read with: an answer is `Envelope/Body/Response/argument`, or five
/// levels for a fault; text is an address, a port, a description.
const LIMITS: Limits = Limits {
    max_bytes: MAX_SOAP_BYTES,
    max_depth: 16,
    max_text: 2048,
};

/// The longest UPnP error description kept (in characters).
const MAX_DESCRIPTION: usize = 120;

/// The value of the `SOAPAction` HTTP header for `action` of the service `service_type`:
/// `"urn:schemas-upnp-org:service:WANIPConnection:2#AddPortMapping"`, quotes included.
///
/// ```
/// let h = natt_upnp::soap::soap_action("urn:schemas-upnp-org:service:WANIPConnection:1", "GetExternalIPAddress");
/// assert_eq!(h, "\"urn:schemas-upnp-org:service:WANIPConnection:1#GetExternalIPAddress\"");
/// ```
pub fn soap_action(service_type: &str, action: &str) -> String {
    format!("\"{service_type}#{action}\"")
}

/// The SOAP request body for `action` (an action name such as `AddPortMapping`) of the service
/// `service_type`, with its input arguments `args` (names and values, in the order the
/// service's description lists them). Values are escaped; names are the specifications'.
///
/// ```
/// let body = natt_upnp::soap::encode_request(
///     "urn:schemas-upnp-org:service:WANIPConnection:1",
///     "DeletePortMapping",
///     &[("NewRemoteHost", ""), ("NewExternalPort", "40000"), ("NewProtocol", "UDP")],
/// );
/// let body = String::from_utf8(body)?;
/// assert!(body.contains("<u:DeletePortMapping xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\">"));
/// assert!(body.contains("<NewExternalPort>40000</NewExternalPort>"));
/// # Ok::<(), std::string::FromUtf8Error>(())
/// ```
pub fn encode_request(service_type: &str, action: &str, args: &[(&str, &str)]) -> Vec<u8> {
    let mut body = format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:{action} xmlns:u=\"{}\">",
        escape(service_type)
    );
    for (name, value) in args {
        body.push_str(&format!("<{name}>{}</{name}>", escape(value)));
    }
    body.push_str(&format!("</u:{action}></s:Body></s:Envelope>\r\n"));
    body.into_bytes()
}

/// The output arguments of a successful action, by name (in the answer's order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Each argument with text: its name (without prefix) and its text, trimmed.
    pub args: Vec<(String, String)>,
}

impl Response {
    /// The text of the output argument `name`, if the answer has it (and it is not empty).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.args.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Why a SOAP answer gives no [`Response`].
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SoapError {
    /// The gateway refused the action: a SOAP fault with a UPnP error (e.g. 718
    /// ConflictInMappingEntry, 606 Action not authorized).
    #[error("UPnP error {code} {description}")]
    Fault {
        /// The UPnP error code.
        code: u16,
        /// The gateway's description of the error (shortened; empty when it gave none).
        description: String,
    },
    /// The answer is larger than `limit` ([`MAX_SOAP_BYTES`]).
    #[error("larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The answer is neither the action's response nor a UPnP fault (bad XML, a DTD, not
    /// UTF-8, another element): what is wrong.
    #[error("{0}")]
    Malformed(String),
}

natt_core::debug_as_display!(SoapError);

/// Reads the answer `body` to a request for `action`: its output arguments, or the UPnP error
/// of its fault.
///
/// ```
/// use natt_upnp::soap::{SoapError, parse_response};
/// let ok = br#"<?xml version="1.0"?>
/// <s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
/// <u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2">
/// <NewExternalIPAddress>203.0.113.101</NewExternalIPAddress></u:GetExternalIPAddressResponse>
/// </s:Body></s:Envelope>"#;
/// let r = parse_response("GetExternalIPAddress", ok)?;
/// assert_eq!(r.get("NewExternalIPAddress"), Some("203.0.113.101"));
///
/// let fault = br#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>
/// <faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>
/// <UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>718</errorCode>
/// <errorDescription>ConflictInMappingEntry</errorDescription></UPnPError></detail>
/// </s:Fault></s:Body></s:Envelope>"#;
/// assert_eq!(
///     parse_response("AddPortMapping", fault),
///     Err(SoapError::Fault { code: 718, description: "ConflictInMappingEntry".into() })
/// );
/// # Ok::<(), SoapError>(())
/// ```
pub fn parse_response(action: &str, body: &[u8]) -> Result<Response, SoapError> {
    let response = format!("{action}Response");
    let mut found = false;
    let mut args = Vec::new();
    let mut code: Option<String> = None;
    let mut description: Option<String> = None;
    let mut root_ok = true;
    xml_reader::walk(body, LIMITS, |event, path| {
        if path.first().is_some_and(|root| root != "Envelope") {
            root_ok = false;
            return;
        }
        match (event, path) {
            (Event::End, [_, body, element]) if body == "Body" && *element == response => found = true,
            (Event::Text(text), [_, body, element, arg])
                if body == "Body" && *element == response && !text.is_empty() =>
            {
                args.push((arg.clone(), text.to_owned()));
            }
            (Event::Text(text), [_, body, fault, detail, error, field])
                if body == "Body" && fault == "Fault" && detail == "detail" && error == "UPnPError" =>
            {
                match field.as_str() {
                    "errorCode" => code = Some(text.to_owned()),
                    "errorDescription" => description = Some(text.to_owned()),
                    _ => {}
                }
            }
            _ => {}
        }
    })
    .map_err(|e| match e {
        XmlError::TooLarge(limit) => SoapError::TooLarge { limit },
        XmlError::Malformed(why) => SoapError::Malformed(why),
    })?;
    if !root_ok {
        return Err(SoapError::Malformed("not a SOAP envelope".into()));
    }
    if found {
        return Ok(Response { args });
    }
    match code {
        Some(code) => match code.parse::<u16>() {
            Ok(code) => Err(SoapError::Fault {
                code,
                description: shorten(description.as_deref().unwrap_or_default(), MAX_DESCRIPTION),
            }),
            Err(_) => Err(SoapError::Malformed(format!(
                "a fault whose error code is '{}'",
                shorten(&code, 20)
            ))),
        },
        None => Err(SoapError::Malformed(format!(
            "neither {} nor a UPnP fault",
            shorten(&response, 80)
        ))),
    }
}

/// `text` with XML's special characters escaped, for element text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// miniupnpd's answers, as the lab's router sends them.
    const MINIUPNPD_OK: &str = "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
        s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:AddAnyPortMappingResponse \
        xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:2\"><NewReservedPort>40001</NewReservedPort>\
        </u:AddAnyPortMappingResponse></s:Body></s:Envelope>\r\n";

    fn fault(code: &str, description: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><s:Fault><faultcode>s:Client\
             </faultcode><faultstring>UPnPError</faultstring><detail><UPnPError \
             xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>{code}</errorCode><errorDescription>{description}\
             </errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>\r\n"
        )
    }

    #[test]
    fn answers_give_their_arguments() {
        let r = parse_response("AddAnyPortMapping", MINIUPNPD_OK.as_bytes()).unwrap();
        assert_eq!(r.get("NewReservedPort"), Some("40001"));
        assert_eq!(r.get("NewOther"), None);
        let empty = "<Envelope><Body><AddPortMappingResponse/></Body></Envelope>";
        assert_eq!(
            parse_response("AddPortMapping", empty.as_bytes()),
            Ok(Response::default())
        );
        let blank = "<e:Envelope xmlns:e=\"x\"><e:Body><m:GetExternalIPAddressResponse xmlns:m=\"y\">\
                     <NewExternalIPAddress></NewExternalIPAddress></m:GetExternalIPAddressResponse></e:Body></e:Envelope>";
        let r = parse_response("GetExternalIPAddress", blank.as_bytes()).unwrap();
        assert_eq!(r.get("NewExternalIPAddress"), None);
    }

    #[test]
    fn faults_give_their_upnp_error() {
        for (code, description) in [
            (718, "ConflictInMappingEntry"),
            (725, "OnlyPermanentLeasesSupported"),
            (501, "ActionFailed"),
            (606, "Action not authorized"),
            (401, "Invalid Action"),
            (602, "Optional Action Not Implemented"),
        ] {
            let r = parse_response("AddAnyPortMapping", fault(&code.to_string(), description).as_bytes());
            assert_eq!(
                r,
                Err(SoapError::Fault {
                    code,
                    description: description.into()
                })
            );
        }
        let no_description = "<Envelope><Body><Fault><detail><UPnPError><errorCode>714</errorCode></UPnPError>\
                              </detail></Fault></Body></Envelope>";
        assert_eq!(
            parse_response("DeletePortMapping", no_description.as_bytes()),
            Err(SoapError::Fault {
                code: 714,
                description: String::new()
            })
        );
        let e = parse_response("AddPortMapping", fault("7x", "no").as_bytes()).unwrap_err();
        assert!(e.to_string().contains("error code is '7x'"), "{e}");
        let e = parse_response("AddPortMapping", fault("70000", "no").as_bytes()).unwrap_err();
        assert!(matches!(e, SoapError::Malformed(_)), "{e}");
    }

    #[test]
    fn anything_else_is_malformed() {
        let bomb = format!(
            "<?xml version=\"1.0\"?><!DOCTYPE Envelope [<!ENTITY % a \"aaaaaaaaaa\"><!ENTITY % b \
             \"%a;%a;%a;%a;%a;%a;%a;%a;%a;%a;\"><!ENTITY c \"%b;%b;%b;%b;%b;%b;%b;%b;%b;%b;\">]>{}",
            MINIUPNPD_OK
                .trim_start_matches("<?xml version=\"1.0\"?>\r\n")
                .replace("40001", "&c;")
        );
        for (body, why) in [
            (bomb.as_str(), "document type declaration"),
            ("", "bad XML"),
            ("<html><body>404</body></html>", "not a SOAP envelope"),
            (
                "<Envelope><Body><OtherResponse/></Body></Envelope>",
                "neither AddPortMappingResponse",
            ),
            ("<Envelope><AddPortMappingResponse/></Envelope>", "neither"),
            ("<Envelope><Body><AddPortMappingResponse>", "bad XML"),
            ("<Envelope><Body>&x;</Body></Envelope>", "bad XML"),
        ] {
            match parse_response("AddPortMapping", body.as_bytes()) {
                Err(SoapError::Malformed(e)) => assert!(e.contains(why), "{body}: {e}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        let huge = format!("<Envelope>{}</Envelope>", " ".repeat(MAX_SOAP_BYTES));
        assert_eq!(
            parse_response("AddPortMapping", huge.as_bytes()),
            Err(SoapError::TooLarge { limit: MAX_SOAP_BYTES })
        );
        let long = format!(
            "<Envelope><Body><Fault><detail><UPnPError><errorCode>1</errorCode><errorDescription>{}\
                            </errorDescription></UPnPError></detail></Fault></Body></Envelope>",
            "d".repeat(500)
        );
        match parse_response("AddPortMapping", long.as_bytes()) {
            Err(SoapError::Fault { code: 1, description }) => assert!(description.chars().count() <= 121),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_are_escaped_and_read_back() {
        let service = "urn:schemas-upnp-org:service:WANIPConnection:2";
        let body = encode_request(
            service,
            "AddPortMapping",
            &[("NewExternalPort", "40000"), ("NewPortMappingDescription", "a<b>&\"c'")],
        );
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(text.contains("<NewPortMappingDescription>a&lt;b&gt;&amp;&quot;c&apos;</NewPortMappingDescription>"));
        // The request is a well-formed envelope that our reader reads (as `AddPortMapping`'s
        // "response" when asked for the action itself).
        let mut back = Vec::new();
        xml_reader::walk(&body, LIMITS, |event, path| {
            if let Event::Text(t) = event {
                back.push((path.join("/"), t.to_owned()));
            }
        })
        .unwrap();
        assert_eq!(
            back[0],
            (
                "Envelope/Body/AddPortMapping/NewExternalPort".to_owned(),
                "40000".to_owned()
            )
        );
        assert_eq!(back[1].1, "a<b>&\"c'");
        assert_eq!(
            soap_action(service, "AddPortMapping"),
            "\"urn:schemas-upnp-org:service:WANIPConnection:2#AddPortMapping\""
        );
    }
}
