//! Newtypes and enums that need no I/O: parse, don't validate.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// A syntactically valid email address, trimmed; the domain part lower-cased.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    /// `field` names the input in the error, e.g. `emails[1]`.
    pub fn parse_field(input: &str, field: &str) -> Result<Self, CoreError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(CoreError::invalid(field, "an email address is required"));
        }
        // Display-name forms like `Ann <a@b.c>` are not an address: a record stores bare addresses.
        if !email_address::EmailAddress::is_valid(trimmed) || trimmed.contains(['<', '>', ' ']) {
            return Err(CoreError::invalid(
                field,
                format!("`{trimmed}` is not a valid email address"),
            ));
        }
        let (local, domain) = trimmed.rsplit_once('@').ok_or_else(|| {
            CoreError::invalid(field, format!("`{trimmed}` is not a valid email address"))
        })?;
        if !domain.contains('.') {
            return Err(CoreError::invalid(
                field,
                format!("`{trimmed}` has no top-level domain"),
            ));
        }
        Ok(EmailAddress(format!(
            "{local}@{}",
            domain.to_ascii_lowercase()
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }

    /// For logs: `a***@example.com`.
    pub fn masked(&self) -> String {
        match self.0.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            None => "***".to_owned(),
        }
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = CoreError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse_field(&value, "email")
    }
}

impl From<EmailAddress> for String {
    fn from(value: EmailAddress) -> Self {
        value.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", self.masked())
    }
}

/// Parses a list of addresses, naming the failing element (`emails[2]`); drops duplicates.
pub fn parse_email_list(values: &[String], field: &str) -> Result<Vec<EmailAddress>, CoreError> {
    let mut out: Vec<EmailAddress> = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let address = EmailAddress::parse_field(value, &format!("{field}[{i}]"))?;
        if !out
            .iter()
            .any(|a| a.as_str().eq_ignore_ascii_case(address.as_str()))
        {
            out.push(address);
        }
    }
    Ok(out)
}

/// A lower-cased domain name such as `example.com`.
pub fn parse_domain(input: &str, field: &str) -> Result<String, CoreError> {
    let domain = input.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid {
        Ok(domain)
    } else {
        Err(CoreError::invalid(
            field,
            format!("`{}` is not a valid domain name", input.trim()),
        ))
    }
}

/// A phone number in a loose international form: digits with an optional leading `+`;
/// spaces, dots, dashes and parentheses are dropped.
pub fn parse_phone(input: &str, field: &str) -> Result<String, CoreError> {
    let trimmed = input.trim();
    let mut out = String::with_capacity(trimmed.len());
    for (i, c) in trimmed.chars().enumerate() {
        match c {
            '+' if i == 0 => out.push(c),
            '0'..='9' => out.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => {
                return Err(CoreError::invalid(
                    field,
                    format!("`{trimmed}` is not a phone number"),
                ));
            }
        }
    }
    let digits = out.trim_start_matches('+').len();
    if !(4..=15).contains(&digits) {
        return Err(CoreError::invalid(
            field,
            format!("`{trimmed}` is not a phone number"),
        ));
    }
    Ok(out)
}

/// A required, trimmed, bounded text field.
pub fn parse_name(input: &str, field: &str, max: usize) -> Result<String, CoreError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(CoreError::invalid(field, "must not be empty"));
    }
    if trimmed.chars().count() > max {
        return Err(CoreError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// An enum stored as text: `as_str`, `FromStr` (an error listing the accepted values),
/// `Display`, serde in snake_case.
#[macro_export]
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::error::CoreError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::error::CoreError::invalid(
                        stringify!($name).to_ascii_lowercase(),
                        format!(
                            "`{other}` is not one of: {}",
                            [$($text),+].join(", ")
                        ),
                    )),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// An account's plan; the plan rules (E3) read it.
    Plan { Base => "base", Automation => "automation" }
);

text_enum!(
    /// A user's role in their account.
    Role { Admin => "admin", Member => "member" }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_address_is_trimmed_and_its_domain_lowercased() {
        let a = EmailAddress::parse_field("  Ann.Lee@Example.COM ", "email").unwrap();
        assert_eq!(a.as_str(), "Ann.Lee@example.com");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.masked(), "A***@example.com");
    }

    #[test]
    fn invalid_email_names_the_field() {
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "Ann <ann@example.com>",
            "ann@localhost",
        ] {
            let err = EmailAddress::parse_field(bad, "emails[0]").unwrap_err();
            assert!(
                matches!(&err, CoreError::Invalid { field, .. } if field == "emails[0]"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn email_list_reports_the_failing_index_and_drops_duplicates() {
        let list = vec!["a@x.io".into(), "A@X.io".into(), "b@x.io".into()];
        assert_eq!(parse_email_list(&list, "emails").unwrap().len(), 2);
        let bad = vec!["a@x.io".into(), "nope".into()];
        let err = parse_email_list(&bad, "emails").unwrap_err();
        assert!(matches!(err, CoreError::Invalid { field, .. } if field == "emails[1]"));
    }

    #[test]
    fn phones_and_domains_are_normalised() {
        assert_eq!(
            parse_phone("+1 (415) 555-0100", "phones[0]").unwrap(),
            "+14155550100"
        );
        assert!(parse_phone("call me", "phones[0]").is_err());
        assert_eq!(
            parse_domain("Example.com.", "domain").unwrap(),
            "example.com"
        );
        assert!(parse_domain("exa mple.com", "domain").is_err());
        assert!(parse_domain("localhost", "domain").is_err());
    }

    #[test]
    fn text_enums_round_trip_and_list_their_values_on_error() {
        assert_eq!("automation".parse::<Plan>().unwrap(), Plan::Automation);
        let err = "gold".parse::<Plan>().unwrap_err().to_string();
        assert!(err.contains("base, automation"), "{err}");
        assert_eq!(Role::Admin.to_string(), "admin");
    }
}
