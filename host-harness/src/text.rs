//! Serde through a type's text form (`Display` and `FromStr`), for values
//! whose text is what users read and write, such as a target (`emu`,
//! `serial:/dev/ttyUSB0@115200`): `#[serde(with = "crate::text")]`.

use std::fmt::Display;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serializer};

pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
where
    T: FromStr,
    T::Err: Display,
    D: Deserializer<'de>,
{
    let text = String::deserialize(d)?;
    text.parse().map_err(de::Error::custom)
}
