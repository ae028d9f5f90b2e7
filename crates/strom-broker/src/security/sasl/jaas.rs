//! Kafka's JAAS configuration strings (`sasl.jaas.config`):
//! `<LoginModule class> <flag> key="value" key=value …;` — possibly several
//! entries. The broker reads options from them (PLAIN users, unsecured
//! OAUTHBEARER validator options); it never loads a login module.

use std::collections::BTreeMap;

/// One `LoginModule` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JaasEntry {
    pub login_module: String,
    /// `required`, `requisite`, `sufficient` or `optional`.
    pub flag: String,
    pub options: BTreeMap<String, String>,
}

/// Parses a JAAS configuration value; the error says what is wrong.
pub fn parse(text: &str) -> Result<Vec<JaasEntry>, String> {
    let tokens = tokenize(text)?;
    let mut entries = Vec::new();
    let mut it = tokens.into_iter().peekable();
    while let Some(tok) = it.next() {
        let Token::Word(login_module) = tok else {
            return Err("expected a login module class name".into());
        };
        let flag = match it.next() {
            Some(Token::Word(f))
                if matches!(
                    f.as_str(),
                    "required" | "requisite" | "sufficient" | "optional"
                ) =>
            {
                f
            }
            _ => {
                return Err(format!(
                    "expected required|requisite|sufficient|optional after {login_module}"
                ))
            }
        };
        let mut options = BTreeMap::new();
        loop {
            match it.next() {
                Some(Token::Semicolon) => break,
                Some(Token::Word(key)) => {
                    if it.next() != Some(Token::Equals) {
                        return Err(format!("expected '=' after option {key}"));
                    }
                    let value = match it.next() {
                        Some(Token::Word(v)) | Some(Token::Quoted(v)) => v,
                        _ => return Err(format!("expected a value for option {key}")),
                    };
                    options.insert(key, value);
                }
                None => return Err("a login module entry must end with ';'".into()),
                Some(_) => return Err("expected an option name or ';'".into()),
            }
        }
        entries.push(JaasEntry {
            login_module,
            flag,
            options,
        });
    }
    if entries.is_empty() {
        return Err("no login module entry".into());
    }
    Ok(entries)
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Equals,
    Semicolon,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '=' => {
                chars.next();
                out.push(Token::Equals);
            }
            ';' => {
                chars.next();
                out.push(Token::Semicolon);
            }
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some(e) => s.push(e),
                            None => return Err("unterminated quoted value".into()),
                        },
                        Some('"') => break,
                        Some(ch) => s.push(ch),
                        None => return Err("unterminated quoted value".into()),
                    }
                }
                out.push(Token::Quoted(s));
            }
            _ => {
                let mut s = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || ch == '=' || ch == ';' || ch == '"' {
                        break;
                    }
                    s.push(ch);
                    chars.next();
                }
                out.push(Token::Word(s));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafka_plain_login_module_config() {
        let e = parse(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice="a;l\"ice";"#,
        )
        .unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].login_module,
            "org.apache.kafka.common.security.plain.PlainLoginModule"
        );
        assert_eq!(e[0].flag, "required");
        assert_eq!(e[0].options["user_alice"], "a;l\"ice");
        assert_eq!(e[0].options["user_admin"], "admin-secret");
        assert_eq!(e[0].options.len(), 4);

        let e = parse("A optional x=1;\nB required;").unwrap();
        assert_eq!(e[0].options["x"], "1");
        assert_eq!(e[1].login_module, "B");
    }

    #[test]
    fn rejects_malformed_config() {
        assert!(parse("").is_err());
        assert!(parse("A required x=\"1\"").is_err()); // no ';'
        assert!(parse("A sometimes;").is_err());
        assert!(parse("A required x;").is_err());
        assert!(parse("A required x=\"open;").is_err());
    }
}
