//! A compiled regular expression that compares by its pattern, so that
//! settings holding one can be compared (a reload keeps flows whose
//! settings did not change).

use std::fmt;
use std::ops::Deref;

#[derive(Clone)]
pub struct Re(regex::bytes::Regex);

impl Re {
    pub fn new(pattern: &str) -> Result<Re, regex::Error> {
        regex::bytes::Regex::new(pattern).map(Re)
    }
}

impl From<regex::bytes::Regex> for Re {
    fn from(re: regex::bytes::Regex) -> Re {
        Re(re)
    }
}

impl Deref for Re {
    type Target = regex::bytes::Regex;

    fn deref(&self) -> &regex::bytes::Regex {
        &self.0
    }
}

impl PartialEq for Re {
    fn eq(&self, other: &Re) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Re {}

impl fmt::Debug for Re {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}
