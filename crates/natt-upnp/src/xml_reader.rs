//! natt's hardened XML reader, shared by everything natt-upnp reads from a gateway: device
//! descriptions ([`crate::description`]) and SOAP answers ([`crate::soap`]).
//!
//! Gateways are untrusted, so a document is checked before xml-rs sees it: at most a given
//! size, UTF-8 (what UPnP sends; xml-rs would otherwise honour a byte order mark or an
//! encoding declaration), and without any markup declaration (`<!DOCTYPE`, `<!ENTITY`, ...):
//! UPnP documents have none, and a DTD's entities could expand a few hundred bytes into
//! gigabytes. xml-rs then reads it with tight limits (depth, text, attributes, names, and no
//! entity expansion beyond the predefined ones), streaming: the work and memory are linear in
//! the document's size, which is bounded.

use xml::Encoding;
use xml::reader::{ParserConfig, XmlEvent};

use crate::error::shorten;

/// The limits one kind of document is read with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The largest document, in bytes.
    pub max_bytes: usize,
    /// The deepest nesting of elements.
    pub max_depth: usize,
    /// The longest text of one element, in bytes.
    pub max_text: usize,
}

/// Why a document was refused (the caller names the document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum XmlError {
    /// Larger than [`Limits::max_bytes`] (the limit).
    TooLarge(usize),
    /// Not UTF-8, with a declaration, over a limit, or not well-formed: what is wrong.
    Malformed(String),
}

/// What [`walk`] reports, with the path of element names (without namespace prefixes) from
/// the root to the element concerned.
pub(crate) enum Event<'a> {
    /// The element's text (trimmed, whole).
    Text(&'a str),
    /// The element ends.
    End,
}

/// Streams through `xml`, calling `visit` for each element's text and end. Refuses documents
/// over `limits`, that are not UTF-8, that have a markup declaration, or that are not
/// well-formed.
pub(crate) fn walk<F>(xml: &[u8], limits: Limits, mut visit: F) -> Result<(), XmlError>
where
    F: FnMut(Event<'_>, &[String]),
{
    if xml.len() > limits.max_bytes {
        return Err(XmlError::TooLarge(limits.max_bytes));
    }
    let text = std::str::from_utf8(xml).map_err(|e| XmlError::Malformed(format!("not UTF-8: {e}")))?;
    if has_declarations(text) {
        return Err(XmlError::Malformed(
            "a document type declaration (DTD), which UPnP documents do not have".into(),
        ));
    }
    let reader = ParserConfig::new()
        .trim_whitespace(true)
        .cdata_to_characters(true)
        .ignore_comments(true)
        .override_encoding(Some(Encoding::Utf8))
        .max_data_length(limits.max_bytes)
        .max_attribute_length(limits.max_text)
        .max_attributes(64)
        .max_name_length(256)
        .max_entity_expansion_length(limits.max_text)
        .max_entity_expansion_depth(1)
        .create_reader(xml);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    for event in reader {
        let event = event.map_err(|e| XmlError::Malformed(format!("bad XML: {}", shorten(&e.to_string(), 120))))?;
        match event {
            XmlEvent::StartElement { name, .. } => {
                if path.len() >= limits.max_depth {
                    return Err(XmlError::Malformed(format!(
                        "XML nested deeper than {}",
                        limits.max_depth
                    )));
                }
                flush(&mut text, &path, &mut visit);
                path.push(name.local_name);
            }
            XmlEvent::Characters(chars) => {
                if text.len() + chars.len() > limits.max_text {
                    return Err(XmlError::Malformed(format!(
                        "text longer than {} bytes",
                        limits.max_text
                    )));
                }
                text.push_str(&chars);
            }
            XmlEvent::EndElement { .. } => {
                flush(&mut text, &path, &mut visit);
                visit(Event::End, &path);
                path.pop();
            }
            _ => {}
        }
    }
    Ok(())
}

/// True when `text` has a markup declaration (`<!DOCTYPE`, `<!ENTITY`, ...): any `<!` that does
/// not open a comment or a CDATA section.
fn has_declarations(text: &str) -> bool {
    text.match_indices("<!").any(|(at, _)| {
        let rest = text.get(at..).unwrap_or_default();
        !rest.starts_with("<!--") && !rest.starts_with("<![CDATA[")
    })
}

/// Hands the text read so far (if any) to `visit`, for the element at `path`.
fn flush<F>(text: &mut String, path: &[String], visit: &mut F)
where
    F: FnMut(Event<'_>, &[String]),
{
    if text.is_empty() {
        return;
    }
    let whole = std::mem::take(text);
    visit(Event::Text(whole.trim()), path);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const LIMITS: Limits = Limits {
        max_bytes: 1024,
        max_depth: 4,
        max_text: 16,
    };

    fn texts(xml: &str) -> Result<Vec<(String, String)>, XmlError> {
        let mut out = Vec::new();
        walk(xml.as_bytes(), LIMITS, |event, path| {
            if let Event::Text(text) = event {
                out.push((path.join("/"), text.to_owned()));
            }
        })?;
        Ok(out)
    }

    #[test]
    fn texts_come_with_their_paths_without_prefixes() {
        let got = texts("<s:a xmlns:s=\"x\"><s:b> one <!-- c --></s:b><c><![CDATA[&two]]>&amp;</c></s:a>").unwrap();
        assert_eq!(
            got,
            [
                ("a/b".to_owned(), "one".to_owned()),
                ("a/c".to_owned(), "&two&".to_owned())
            ]
        );
    }

    #[test]
    fn declarations_limits_and_garbage_are_refused() {
        for (xml, why) in [
            ("<!DOCTYPE a><a/>", "document type declaration"),
            ("<a><!ENTITY x 'y'></a>", "document type declaration"),
            ("<a><b><c><d><e/></d></c></b></a>", "deeper than 4"),
            ("<a>0123456789abcdefg</a>", "longer than 16"),
            ("<a><b></a>", "bad XML"),
            ("<a>&x;</a>", "bad XML"),
        ] {
            match texts(xml) {
                Err(XmlError::Malformed(e)) => assert!(e.contains(why), "{xml}: {e}"),
                other => panic!("{xml}: {other:?}"),
            }
        }
        assert_eq!(texts(&" ".repeat(1025)), Err(XmlError::TooLarge(1024)));
        let bytes = [b'<', b'a', b'>', 0xFF, b'<', b'/', b'a', b'>'];
        let e = walk(&bytes, LIMITS, |_, _| {}).unwrap_err();
        assert!(
            matches!(e, XmlError::Malformed(ref e) if e.contains("not UTF-8")),
            "{e:?}"
        );
    }
}
