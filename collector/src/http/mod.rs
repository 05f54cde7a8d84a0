//! What every HTTP handler shares, below all of them: [`state::AppState`], write and read
//! tokens ([`auth`]), request bodies under their size caps ([`body`]) and the one error
//! type, [`error::ApiError`].

pub mod auth;
pub mod body;
pub mod error;
pub mod state;
