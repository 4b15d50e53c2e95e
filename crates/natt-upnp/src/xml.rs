//! A small element tree of a gateway's XML (device descriptions, SOAP answers), built with
//! limits: nesting depth, element count and entity expansion are bounded, so hostile XML costs
//! little memory and no deep recursion. Names are local names (namespace prefixes dropped):
//! `s:Envelope` is `Envelope`.

use xml::reader::{ParserConfig2, XmlEvent};

/// Deepest nesting accepted (a device description nests about 9 deep).
const MAX_DEPTH: usize = 32;
/// Most elements accepted in one document.
const MAX_ELEMENTS: usize = 8192;

/// An XML element: its local name, its text (trimmed, concatenated) and its children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// The local name.
    pub name: String,
    /// The text directly inside it.
    pub text: String,
    /// Child elements, in order.
    pub children: Vec<Element>,
}

impl Element {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the first child named `name`.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// The element at `path` of child names below this one.
    pub fn path(&self, path: &[&str]) -> Option<&Element> {
        path.iter().try_fold(self, |e, name| e.child(name))
    }
}

/// Parses `bytes` into its root element.
pub fn parse(bytes: &[u8]) -> Result<Element, String> {
    let config = ParserConfig2::new()
        .trim_whitespace(true)
        .cdata_to_characters(true)
        .ignore_comments(true)
        .coalesce_characters(true)
        .max_entity_expansion_length(1024)
        .max_entity_expansion_depth(2)
        .max_attributes(64)
        .max_name_length(256)
        .max_attribute_length(4096)
        .max_data_length(bytes.len().max(1));
    let reader = config.create_reader(bytes);
    let mut stack: Vec<Element> = Vec::new();
    let mut count = 0usize;
    for event in reader {
        match event.map_err(|e| format!("bad XML: {e}"))? {
            XmlEvent::StartElement { name, .. } => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(format!("more than {MAX_ELEMENTS} elements"));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH}"));
                }
                stack.push(Element {
                    name: name.local_name,
                    ..Element::default()
                });
            }
            XmlEvent::EndElement { .. } => {
                let done = stack.pop().ok_or("unbalanced XML")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            XmlEvent::Characters(text) | XmlEvent::CData(text) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            _ => {}
        }
    }
    Err("no root element".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_tree_of_local_names() {
        let doc = br#"<?xml version="1.0"?>
            <s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
            <u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2">
            <NewExternalIPAddress> 203.0.113.101 </NewExternalIPAddress>
            <!-- comment --><Other><![CDATA[a<b]]>&amp;c</Other>
            </u:GetExternalIPAddressResponse></s:Body></s:Envelope>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "Envelope");
        let resp = root.path(&["Body", "GetExternalIPAddressResponse"]).unwrap();
        assert_eq!(resp.child_text("NewExternalIPAddress"), Some("203.0.113.101"));
        assert_eq!(resp.child_text("Other"), Some("a<b&c"));
    }

    #[test]
    fn rejects_bad_and_hostile_xml() {
        for doc in [
            &b""[..],
            b"not xml",
            b"<a><b></a>",
            b"<a>",
            b"<a>&unknown;</a>",
            b"\xff\xfe<\x00a\x00>",
        ] {
            assert!(parse(doc).is_err(), "accepted {:?}", String::from_utf8_lossy(doc));
        }
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert!(parse(deep.as_bytes()).unwrap_err().contains("deeper"));
        let many = format!("<r>{}</r>", "<a/>".repeat(MAX_ELEMENTS + 1));
        assert!(parse(many.as_bytes()).unwrap_err().contains("elements"));
        // Billion laughs: entity expansion is capped.
        let mut lol = String::from("<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY l0 \"lol\">");
        for i in 1..10 {
            let prev = format!("&l{};", i - 1).repeat(10);
            lol.push_str(&format!("<!ENTITY l{i} \"{prev}\">"));
        }
        lol.push_str("]><r>&l9;</r>");
        assert!(parse(lol.as_bytes()).is_err());
    }
}
