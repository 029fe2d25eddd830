//! TSIG key files: what `tsig-keygen -a hmac-sha256 NAME` writes (BIND's `key` statement),
//!
//! ```text
//! key "NAME" {
//!     algorithm hmac-sha256;
//!     secret "BASE64";
//! };
//! ```
//!
//! with BIND's comments (`//`, `#`, `/* */`), or a bare base64 secret on its own. A key file may
//! hold several `key` statements (a BIND include file); the provider's `tsig_key_name` picks one.
//!
//! A problem is reported with its line and column in the key file, and **never with any of the
//! file's text**: a mangled file may have the secret where a keyword was expected, so messages
//! describe what was found ("a quoted string") rather than quoting it.

use base64::Engine as _;

use crate::model::{SecretBytes, TsigAlgorithm};
use crate::values;

/// One key of a key file.
pub(crate) struct FileKey {
    /// Absolute, lowercase, with the trailing dot; `None` for a bare secret.
    pub name: Option<String>,
    /// `None` for a bare secret.
    pub algorithm: Option<TsigAlgorithm>,
    pub secret: SecretBytes,
}

/// A problem at a place in the key file.
#[derive(Debug)]
pub(crate) struct FileError {
    pub line: u32,
    pub column: u32,
    pub message: String,
    pub hint: String,
}

const KEYGEN_HINT: &str = "write it as tsig-keygen does: key \"NAME\" { algorithm hmac-sha256; \
                           secret \"BASE64\"; }; (or create it: tsig-keygen -a hmac-sha256 NAME)";

/// The keys of a key file (at least one).
pub(crate) fn parse(text: &str) -> Result<Vec<FileKey>, FileError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(error(
            (1, 1),
            "is empty",
            "put the key in it: tsig-keygen -a hmac-sha256 NAME > FILE",
        ));
    }
    let base64ish = trimmed
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if base64ish {
        let secret = decode_secret(trimmed).ok_or_else(|| {
            error(
                (1, 1),
                "holds neither a key statement nor a valid base64 secret",
                KEYGEN_HINT,
            )
        })?;
        return Ok(vec![FileKey {
            name: None,
            algorithm: None,
            secret,
        }]);
    }
    let tokens = tokenize(text)?;
    Parser {
        tokens: &tokens,
        next: 0,
        end: end_of(text),
    }
    .file()
}

fn error(at: (u32, u32), message: impl Into<String>, hint: impl Into<String>) -> FileError {
    FileError {
        line: at.0,
        column: at.1,
        message: message.into(),
        hint: hint.into(),
    }
}

fn decode_secret(text: &str) -> Option<SecretBytes> {
    let compact: zeroize::Zeroizing<String> =
        zeroize::Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .ok()?;
    if bytes.is_empty() {
        return None;
    }
    Some(SecretBytes::new(bytes))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Word,
    Quoted,
    Open,
    Close,
    Semicolon,
}

impl Kind {
    fn describe(&self) -> &'static str {
        match self {
            Kind::Word => "a word",
            Kind::Quoted => "a quoted string",
            Kind::Open => "`{`",
            Kind::Close => "`}`",
            Kind::Semicolon => "`;`",
        }
    }
}

struct Token {
    kind: Kind,
    /// Wiped on drop: it may be the secret.
    text: zeroize::Zeroizing<String>,
    at: (u32, u32),
}

/// Line and column just after the last character.
fn end_of(text: &str) -> (u32, u32) {
    let mut at = (1u32, 1u32);
    for c in text.chars() {
        at = if c == '\n' {
            (at.0 + 1, 1)
        } else {
            (at.0, at.1 + 1)
        };
    }
    at
}

fn tokenize(text: &str) -> Result<Vec<Token>, FileError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut line, mut column) = (1u32, 1u32);
    let mut i = 0;
    // Advances over chars[i], keeping line and column.
    let step = |i: &mut usize, line: &mut u32, column: &mut u32| {
        if chars[*i] == '\n' {
            *line += 1;
            *column = 1;
        } else {
            *column += 1;
        }
        *i += 1;
    };
    while i < chars.len() {
        let c = chars[i];
        let at = (line, column);
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            step(&mut i, &mut line, &mut column);
        } else if c == '#' || (c == '/' && next == Some('/')) {
            while i < chars.len() && chars[i] != '\n' {
                step(&mut i, &mut line, &mut column);
            }
        } else if c == '/' && next == Some('*') {
            step(&mut i, &mut line, &mut column);
            step(&mut i, &mut line, &mut column);
            loop {
                if i >= chars.len() {
                    return Err(error(at, "a /* comment is not closed", "close it with */"));
                }
                if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    step(&mut i, &mut line, &mut column);
                    step(&mut i, &mut line, &mut column);
                    break;
                }
                step(&mut i, &mut line, &mut column);
            }
        } else if c == '"' {
            step(&mut i, &mut line, &mut column);
            let mut value = zeroize::Zeroizing::new(String::new());
            loop {
                match chars.get(i) {
                    None => {
                        return Err(error(
                            at,
                            "a quoted string is not closed",
                            "end it with \" on the same statement",
                        ))
                    }
                    Some('"') => {
                        step(&mut i, &mut line, &mut column);
                        break;
                    }
                    Some('\\') if i + 1 < chars.len() => {
                        step(&mut i, &mut line, &mut column);
                        value.push(chars[i]);
                        step(&mut i, &mut line, &mut column);
                    }
                    Some(&ch) => {
                        value.push(ch);
                        step(&mut i, &mut line, &mut column);
                    }
                }
            }
            tokens.push(Token {
                kind: Kind::Quoted,
                text: value,
                at,
            });
        } else if matches!(c, '{' | '}' | ';') {
            let kind = match c {
                '{' => Kind::Open,
                '}' => Kind::Close,
                _ => Kind::Semicolon,
            };
            step(&mut i, &mut line, &mut column);
            tokens.push(Token {
                kind,
                text: zeroize::Zeroizing::new(String::new()),
                at,
            });
        } else {
            let mut value = zeroize::Zeroizing::new(String::new());
            while let Some(&ch) = chars.get(i) {
                if ch.is_whitespace() || matches!(ch, '{' | '}' | ';' | '"' | '#') {
                    break;
                }
                value.push(ch);
                step(&mut i, &mut line, &mut column);
            }
            tokens.push(Token {
                kind: Kind::Word,
                text: value,
                at,
            });
        }
    }
    Ok(tokens)
}

struct Parser<'t> {
    tokens: &'t [Token],
    next: usize,
    end: (u32, u32),
}

impl<'t> Parser<'t> {
    fn take(&mut self) -> Option<&'t Token> {
        let t = self.tokens.get(self.next);
        self.next += 1;
        t
    }

    /// The next token, which must be of `kind`; `after` says where, for the message.
    fn expect(&mut self, kind: Kind, after: &str) -> Result<&'t Token, FileError> {
        match self.take() {
            Some(t) if t.kind == kind => Ok(t),
            Some(t) => Err(error(
                t.at,
                format!(
                    "expected {} {after}, found {}",
                    kind.describe(),
                    t.kind.describe()
                ),
                KEYGEN_HINT,
            )),
            None => Err(error(
                self.end,
                format!(
                    "the file ends where {} {after} was expected",
                    kind.describe()
                ),
                KEYGEN_HINT,
            )),
        }
    }

    fn file(mut self) -> Result<Vec<FileKey>, FileError> {
        let mut keys = Vec::new();
        while let Some(t) = self.take() {
            if t.kind != Kind::Word || t.text.as_str() != "key" {
                return Err(error(
                    t.at,
                    format!("expected a `key` statement, found {}", t.kind.describe()),
                    KEYGEN_HINT,
                ));
            }
            keys.push(self.key(t.at)?);
        }
        if keys.is_empty() {
            return Err(error((1, 1), "holds no key statement", KEYGEN_HINT));
        }
        Ok(keys)
    }

    /// After `key`: `NAME { algorithm A; secret "S"; };`
    fn key(&mut self, at: (u32, u32)) -> Result<FileKey, FileError> {
        let name = match self.take() {
            Some(t) if matches!(t.kind, Kind::Word | Kind::Quoted) => {
                let text = t.text.as_str();
                if values::dns_name(text).is_err() {
                    return Err(error(
                        t.at,
                        "the key name is not a valid DNS name",
                        "name the key like a DNS name, e.g. key \"failover-key\" { ... };",
                    ));
                }
                absolute_name(text)
            }
            Some(t) => {
                return Err(error(
                    t.at,
                    format!(
                        "expected the key name after `key`, found {}",
                        t.kind.describe()
                    ),
                    KEYGEN_HINT,
                ))
            }
            None => {
                return Err(error(
                    self.end,
                    "the file ends where the key name was expected",
                    KEYGEN_HINT,
                ))
            }
        };
        let open = self.expect(Kind::Open, "after the key name")?;
        let (mut algorithm, mut secret) = (None, None);
        loop {
            let Some(t) = self.take() else {
                return Err(error(
                    open.at,
                    "the `{` of this key is never closed",
                    "end the key with };",
                ));
            };
            match (&t.kind, t.text.as_str()) {
                (Kind::Close, _) => break,
                (Kind::Word, "algorithm") => {
                    let value = self.value("algorithm")?;
                    if algorithm.is_some() {
                        return Err(twice(t.at, "algorithm"));
                    }
                    let parsed = values::keyword::<TsigAlgorithm>(value.text.as_str(), "")
                        .map_err(|_| {
                            let names: Vec<&str> =
                                TsigAlgorithm::ALL.iter().map(|a| a.as_str()).collect();
                            error(
                                value.at,
                                "the algorithm is not one agentd supports",
                                format!(
                                    "use one of {}: tsig-keygen -a hmac-sha256 NAME writes one",
                                    names.join(", ")
                                ),
                            )
                        })?;
                    algorithm = Some(parsed);
                    self.expect(Kind::Semicolon, "after the algorithm")?;
                }
                (Kind::Word, "secret") => {
                    let value = self.value("secret")?;
                    if secret.is_some() {
                        return Err(twice(t.at, "secret"));
                    }
                    let decoded = decode_secret(value.text.as_str()).ok_or_else(|| {
                        error(
                            value.at,
                            "the secret is not valid base64 (or is empty)",
                            "copy the secret exactly as tsig-keygen wrote it, between the quotes",
                        )
                    })?;
                    secret = Some(decoded);
                    self.expect(Kind::Semicolon, "after the secret")?;
                }
                (kind, _) => {
                    return Err(error(
                        t.at,
                        format!(
                            "expected `algorithm`, `secret` or `}}` in the key, found {}",
                            if *kind == Kind::Word {
                                "another word"
                            } else {
                                kind.describe()
                            }
                        ),
                        KEYGEN_HINT,
                    ))
                }
            }
        }
        self.expect(Kind::Semicolon, "after the `}` of the key")?;
        let missing =
            |what: &str| error(at, format!("the key has no {what} statement"), KEYGEN_HINT);
        let algorithm = algorithm.ok_or_else(|| missing("algorithm"))?;
        let secret = secret.ok_or_else(|| missing("secret"))?;
        Ok(FileKey {
            name: Some(name),
            algorithm: Some(algorithm),
            secret,
        })
    }

    /// The value of a statement: a word or a quoted string.
    fn value(&mut self, statement: &str) -> Result<&'t Token, FileError> {
        match self.take() {
            Some(t) if matches!(t.kind, Kind::Word | Kind::Quoted) => Ok(t),
            Some(t) => Err(error(
                t.at,
                format!(
                    "expected the value of {statement}, found {}",
                    t.kind.describe()
                ),
                KEYGEN_HINT,
            )),
            None => Err(error(
                self.end,
                format!("the file ends where the value of {statement} was expected"),
                KEYGEN_HINT,
            )),
        }
    }
}

fn twice(at: (u32, u32), statement: &str) -> FileError {
    error(
        at,
        format!("the key has a second {statement} statement"),
        format!("keep one {statement} per key"),
    )
}

/// `Name.Example` → `name.example.`: DNS names compare case-insensitively, and TSIG uses the
/// absolute name.
pub(crate) fn absolute_name(name: &str) -> String {
    let mut n = name.to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "q2cGCUYPD/mgQAzbTVd5Pz3ncwvGzPYSCW6gPzlAlsk=";

    fn keygen(secret: &str) -> String {
        format!("key \"Failover-Key\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n")
    }

    fn one(text: &str) -> FileKey {
        let mut keys = parse(text).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(keys.len(), 1);
        keys.remove(0)
    }

    #[test]
    fn reads_what_tsig_keygen_writes() {
        let key = one(&keygen(SECRET));
        assert_eq!(key.name.as_deref(), Some("failover-key."));
        assert_eq!(key.algorithm, Some(TsigAlgorithm::HmacSha256));
        let expected = base64::engine::general_purpose::STANDARD
            .decode(SECRET)
            .unwrap();
        assert_eq!(key.secret.expose(), expected.as_slice());
    }

    #[test]
    fn reads_comments_and_unquoted_names() {
        let text = format!(
            "# made by hand\n// for the corp DNS\n/* two\nlines */ key k.example. {{ algorithm \
             hmac-sha512; # the strongest\n secret \"{SECRET}\"; }};"
        );
        let key = one(&text);
        assert_eq!(key.name.as_deref(), Some("k.example."));
        assert_eq!(key.algorithm, Some(TsigAlgorithm::HmacSha512));
    }

    #[test]
    fn reads_a_bare_secret() {
        let key = one(&format!("{SECRET}\n"));
        assert_eq!(key.name, None);
        assert_eq!(key.algorithm, None);
        assert_eq!(key.secret.expose().len(), 32);
    }

    #[test]
    fn reads_several_keys() {
        let text = format!(
            "{}{}",
            keygen(SECRET),
            keygen(SECRET).replace("Failover", "other")
        );
        assert_eq!(parse(&text).unwrap().len(), 2);
    }

    #[test]
    fn errors_have_a_place_and_never_the_secret() {
        let cases = [
            (keygen(SECRET).replace(";\n\tsecret", "\n\tsecret"), (3, 2)),
            (keygen(SECRET).replace("\";\n}", "\"\n}"), (4, 1)),
            (keygen(SECRET).replace("secret \"", "secret \"!"), (3, 9)),
            (keygen(SECRET).replace("hmac-sha256", "hmac-md5"), (2, 12)),
            (keygen(SECRET).replace("};\n", "}\n"), (5, 1)),
            (
                keygen(SECRET).replace(&format!("secret \"{SECRET}\""), SECRET),
                (3, 2),
            ),
            (keygen(SECRET).replace("key", "kee"), (1, 1)),
            ("key \"k\" { algorithm hmac-sha256; };".to_string(), (1, 1)),
            (format!("/* {SECRET}"), (1, 1)),
            (format!("key \"k\" {{ secret \"{SECRET}"), (1, 18)),
        ];
        for (text, at) in cases {
            let e = match parse(&text) {
                Err(e) => e,
                Ok(_) => panic!("parsed: {text}"),
            };
            assert_eq!((e.line, e.column), at, "{e:?}\n{text}");
            for piece in SECRET.as_bytes().windows(4) {
                let piece = std::str::from_utf8(piece).unwrap();
                assert!(!e.message.contains(piece), "{e:?}");
                assert!(!e.hint.contains(piece), "{e:?}");
            }
        }
    }
}
