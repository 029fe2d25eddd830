//! Just enough XML to read AWS answers: elements, their text and children; attributes,
//! namespaces (the prefix is dropped), comments, processing instructions and the DOCTYPE are
//! skipped. The answers we read are a few kilobytes of machine-written XML, so a small tree
//! beats a streaming parser's state machine in the callers.

/// One element: its local name, its text (the concatenated character data directly inside
/// it, entities decoded) and its child elements in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first direct child of that name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All direct children of that name.
    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the first direct child of that name.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    /// The first element of that name at any depth (self included), depth first.
    pub fn find(&self, name: &str) -> Option<&Element> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
}

/// Parse a document into its root element.
pub fn parse(doc: &str) -> Result<Element, String> {
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut rest = doc;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            push_text(&mut stack, rest)?;
            break;
        };
        push_text(&mut stack, &rest[..lt])?;
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<?") {
            rest = skip_past(r, "?>")?;
        } else if let Some(r) = rest.strip_prefix("<!--") {
            rest = skip_past(r, "-->")?;
        } else if let Some(r) = rest.strip_prefix("<![CDATA[") {
            let end = r.find("]]>").ok_or("unterminated CDATA")?;
            if let Some(top) = stack.last_mut() {
                top.text.push_str(&r[..end]);
            }
            rest = &r[end + 3..];
        } else if let Some(r) = rest.strip_prefix("<!") {
            rest = skip_past(r, ">")?;
        } else if let Some(r) = rest.strip_prefix("</") {
            let end = r.find('>').ok_or("unterminated end tag")?;
            let name = local(r[..end].trim());
            let done = stack.pop().ok_or_else(|| format!("unexpected </{name}>"))?;
            if done.name != name {
                return Err(format!("<{}> closed by </{name}>", done.name));
            }
            attach(&mut stack, &mut root, done)?;
            rest = &r[end + 1..];
        } else {
            let end = tag_end(&rest[1..]).ok_or("unterminated tag")? + 1;
            let inner = &rest[1..end];
            let (inner, empty) = match inner.strip_suffix('/') {
                Some(i) => (i, true),
                None => (inner, false),
            };
            let name_end = inner
                .find(|c: char| c.is_ascii_whitespace())
                .unwrap_or(inner.len());
            let name = local(&inner[..name_end]);
            if name.is_empty() {
                return Err("empty tag name".into());
            }
            let el = Element {
                name: name.to_string(),
                ..Element::default()
            };
            if empty {
                attach(&mut stack, &mut root, el)?;
            } else {
                stack.push(el);
            }
            rest = &rest[end + 1..];
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("<{}> is not closed", open.name));
    }
    root.ok_or_else(|| "no element".to_string())
}

fn local(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, l)| l)
}

fn skip_past<'a>(s: &'a str, end: &str) -> Result<&'a str, String> {
    s.find(end)
        .map(|i| &s[i + end.len()..])
        .ok_or_else(|| format!("no closing {end:?}"))
}

/// The index of the `>` that ends a start tag, skipping quoted attribute values.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) -> Result<(), String> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None if root.is_none() => *root = Some(el),
        None => return Err("more than one root element".into()),
    }
    Ok(())
}

fn push_text(stack: &mut [Element], raw: &str) -> Result<(), String> {
    match stack.last_mut() {
        Some(top) => top.text.push_str(&unescape(raw)?),
        None if raw.trim().is_empty() => {}
        None => return Err("text outside the root element".into()),
    }
    Ok(())
}

fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let r = &rest[amp + 1..];
        let semi = r.find(';').ok_or("unterminated entity")?;
        let entity = &r[..semi];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(h) = entity.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = entity.strip_prefix('#') {
                    d.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown entity &{entity};"))?
            }
        };
        out.push(c);
        rest = &r[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Escape text for an element's content.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aws_answer_reads_as_a_tree_with_decoded_text() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- comment -->
<ns:ListResourceRecordSetsResponse xmlns:ns="https://route53.amazonaws.com/doc/2013-04-01/">
  <ResourceRecordSets><ResourceRecordSet><Name>a&amp;b.example.</Name><Type>TXT</Type>
    <ResourceRecords><ResourceRecord><Value>&quot;x &gt; y&#33;&#x3f;&quot;</Value></ResourceRecord></ResourceRecords>
  </ResourceRecordSet></ResourceRecordSets>
  <IsTruncated a="1>2" />
  <Note><![CDATA[<raw>]]></Note>
</ns:ListResourceRecordSetsResponse>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "ListResourceRecordSetsResponse");
        let set = root.find("ResourceRecordSet").unwrap();
        assert_eq!(set.child_text("Name"), Some("a&b.example."));
        assert_eq!(
            set.find("Value").map(|v| v.text.as_str()),
            Some("\"x > y!?\"")
        );
        assert!(root.child("IsTruncated").is_some());
        assert_eq!(root.child_text("Note"), Some("<raw>"));
        assert_eq!(root.children("ResourceRecordSets").count(), 1);
    }

    #[test]
    fn broken_documents_are_errors_not_guesses() {
        for doc in [
            "<a><b></a>",
            "<a>",
            "",
            "<a></a><b/>",
            "<a>&bogus;</a>",
            "x<a/>",
        ] {
            assert!(parse(doc).is_err(), "{doc:?}");
        }
    }

    #[test]
    fn escaped_text_reads_back_the_same() {
        let text = "<a href=\"x\">&'";
        let doc = format!("<v>{}</v>", escape(text));
        assert_eq!(parse(&doc).unwrap().text, text);
    }
}
