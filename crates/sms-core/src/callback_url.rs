//! Where a client wants to hear about its messages: a checked callback URL.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// Longest callback URL accepted, in bytes.
pub const MAX_CALLBACK_URL: usize = 2048;

/// Where a client wants its status events: an absolute `http` or `https` URL.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CallbackUrl(String);

impl CallbackUrl {
    /// Checks `url`: absolute, `http` or `https`, with a host, no credentials, at most
    /// [`MAX_CALLBACK_URL`] bytes.
    pub fn new(url: &str) -> Result<Self, ValidationError> {
        let problem = |p: String| ValidationError::new("callback_url", p);
        if url.len() > MAX_CALLBACK_URL {
            return Err(problem(format!(
                "expected at most {MAX_CALLBACK_URL} bytes, found {}",
                url.len()
            )));
        }
        let parsed = url::Url::parse(url)
            .map_err(|e| problem(format!("expected an absolute http(s) URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(problem(format!(
                "expected an http or https URL, found scheme {:?}",
                parsed.scheme()
            )));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(problem("expected a host".to_owned()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(problem(
                "credentials in the URL are not accepted; callbacks are signed instead".to_owned(),
            ));
        }
        Ok(Self(url.to_owned()))
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CallbackUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallbackUrl({:?})", self.0)
    }
}

impl fmt::Display for CallbackUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for CallbackUrl {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<CallbackUrl> for String {
    fn from(url: CallbackUrl) -> Self {
        url.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls_must_be_absolute_http_without_credentials() {
        assert!(CallbackUrl::new("https://app.example/sms/events?x=1").is_ok());
        assert!(CallbackUrl::new("http://127.0.0.1:9000/e").is_ok());
        for bad in [
            "",
            "/relative",
            "ftp://files.example/x",
            "https://user:pw@app.example/e",
            "mailto:a@b.example",
        ] {
            let e = CallbackUrl::new(bad).unwrap_err();
            assert_eq!(e.field, "callback_url", "{bad}: {e}");
        }
        let long = format!("https://app.example/{}", "a".repeat(MAX_CALLBACK_URL));
        assert!(
            CallbackUrl::new(&long)
                .unwrap_err()
                .problem
                .contains("2048")
        );
    }
}
