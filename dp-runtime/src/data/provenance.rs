//! Where a piece of preprocessing comes from: public knowledge, or the private data itself.
//!
//! DP-SGD's guarantee covers what training does with the examples it is given. Anything computed
//! from the private rows *before* training (a category list, a mean, a vocabulary, a split that
//! depends on the row count) is released outside that guarantee: removing one person can change
//! the features of everyone else, or even the input shape. Loaders report the provenance of each
//! such step so that a caller can print it, and the data-dependent paths say so in their names.

use std::fmt;

/// Whether preprocessing is a function of public knowledge alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provenance {
    /// Fixed by public knowledge (a published description, a list shipped with the project, a
    /// hash of the row itself): the same whichever other rows the private data holds.
    Public,
    /// Fitted to the private training data with no privacy accounting: it depends on every row
    /// and is not covered by the ε of training.
    FittedToPrivateDataUnaccounted,
}

impl Provenance {
    /// Whether the preprocessing depends on public knowledge only.
    pub fn is_public(self) -> bool {
        self == Provenance::Public
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provenance::Public => "public",
            Provenance::FittedToPrivateDataUnaccounted => {
                "fitted to the private training data (not private, outside ε)"
            }
        })
    }
}
