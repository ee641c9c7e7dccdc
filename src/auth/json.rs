//! JSON that means one thing: an object with the same member name twice is
//! refused. serde_json keeps the last value silently while other parsers
//! (an upstream's, an IdP's) keep the first, so `{"email":"a@x","email":"b@y"}`
//! could be one user to porteiro and another to whoever else reads it.
//!
//! Every token header and payload, ID token, token-endpoint and userinfo
//! answer, and back-channel body porteiro decodes goes through here. The
//! check is made while the value is built (one pass, no second parse), so a
//! cold token verification costs no more than with `serde_json::from_slice`.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `bytes` as JSON, refusing duplicate member names at any depth.
pub fn value(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// A JSON object, refusing duplicate member names at any depth.
pub fn object(bytes: &[u8]) -> Result<Map<String, Value>, serde_json::Error> {
    match value(bytes)? {
        Value::Object(map) => Ok(map),
        _ => Err(de::Error::custom("expected a JSON object")),
    }
}

/// `T` from JSON, refusing duplicate member names at any depth (serde's
/// derive catches repeated known fields only, not repeated unknown ones).
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_value(value(bytes)?)
}

/// Builds a [`Value`] as serde_json's own visitor does, but an object's
/// second member of one name is an error rather than a replacement.
/// serde_json's recursion limit still bounds the depth.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN or infinity; from_f64 is None only for those.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if object.contains_key(&name) {
                return Err(de::Error::custom(format_args!("duplicate member {name:?}")));
            }
            let member = map.next_value_seed(Strict)?;
            object.insert(name, member);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_refused_at_any_depth() {
        assert!(object(br#"{"email":"a@x.test","email":"b@y.test"}"#).is_err());
        assert!(object(br#"{"a":{"b":1,"b":1}}"#).is_err());
        assert!(object(br#"{"a":[{"b":1},{"c":2,"c":3}]}"#).is_err());
        // The same name in sibling objects is fine.
        let ok = object(br#"{"a":{"b":1},"c":{"b":2},"d":[1,2.5,"x",null,true]}"#).unwrap();
        assert_eq!(Value::Object(ok), serde_json::json!({"a":{"b":1},"c":{"b":2},"d":[1,2.5,"x",null,true]}));
        assert!(object(b"[1]").is_err());
        assert!(object(br#"{"a":1} x"#).is_err(), "trailing bytes");
    }

    #[test]
    fn typed_decoding_sees_unknown_duplicates_too() {
        #[derive(serde::Deserialize)]
        struct Header {
            #[expect(dead_code, reason = "only its parsing matters here")]
            alg: String,
        }
        assert!(from_slice::<Header>(br#"{"alg":"RS256","typ":"JWT"}"#).is_ok());
        assert!(from_slice::<Header>(br#"{"alg":"RS256","typ":"JWT","typ":"x"}"#).is_err());
        assert!(serde_json::from_slice::<Header>(br#"{"alg":"RS256","typ":"JWT","typ":"x"}"#).is_ok());
    }

    #[test]
    fn numbers_as_serde_json_reads_them() {
        let v = value(br#"[18446744073709551615,-5,1.5e3]"#).unwrap();
        assert_eq!(v, serde_json::from_slice::<Value>(br#"[18446744073709551615,-5,1.5e3]"#).unwrap());
    }
}
