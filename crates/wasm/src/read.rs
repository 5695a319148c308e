//! JS values read as serde data, meaning what `JSON.stringify` makes of them: the package
//! wrote a structured argument as JSON text for the module to read, and now hands over the
//! value itself, so a value must read exactly as its JSON text did.
//!
//! `serde_wasm_bindgen::Deserializer` reads values differently: a struct reads only the
//! fields it declares (`deny_unknown_fields` never sees the others, so a misspelt
//! `expires` would make a tuple that never ends), `undefined` is a value (`null`) where
//! JSON leaves the property out, a `Date` is an empty object where JSON writes its time,
//! and nesting has no limit (a cyclic object overflows the module's stack). So values are
//! read here, by JSON's rules:
//!
//! - an object's own enumerable properties, in their order; one whose value is
//!   `undefined`, a function or a symbol is left out (in an array it is `null`);
//! - an object with a `toJSON` method (a `Date`) is what that method gives;
//! - a number that is not finite is `null`; a whole number is an integer where JSON's
//!   digits fit `u64` or `i64`, as serde_json reads them;
//! - a `BigInt` and a string with a lone surrogate are refused, as JSON refused them;
//! - arrays and objects nest at most 127 deep, serde_json's limit.
//!
//! Boxed primitives (`new Number(1)`) are read as the objects they are, not unboxed as
//! JSON does; nothing the core reads takes an object there, so they are refused.

use js_sys::{Array, Function, JsString, Object, Reflect};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use std::fmt;
use wasm_bindgen::{JsCast, JsValue};

/// How deep arrays and objects may nest: serde_json's limit, which the JSON text was read
/// with (127 containers inside each other).
const MAX_DEPTH: u8 = 128;

/// The longest array JSON text could hold: V8's longest string is just under 2^29 code
/// units, and an element takes two (`0,`) at least. A longer (sparse) array is refused
/// before its holes are read one by one.
const MAX_ARRAY: u32 = 1 << 28;

/// What is wrong with a value, in serde's words (`unknown field ...`) or ours.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }

    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Error(format!(
            "invalid type: {}, expected {exp}",
            Unexpected(unexp)
        ))
    }

    fn invalid_value(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Error(format!(
            "invalid value: {}, expected {exp}",
            Unexpected(unexp)
        ))
    }
}

/// What a value was instead of the expected, in serde_json's words: `null`, and floats
/// as it formats them.
struct Unexpected<'a>(de::Unexpected<'a>);

impl fmt::Display for Unexpected<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            de::Unexpected::Unit => f.write_str("null"),
            de::Unexpected::Float(v) => {
                write!(f, "floating point `{}`", zmij::Buffer::new().format(v))
            }
            other => fmt::Display::fmt(&other, f),
        }
    }
}

/// A JS value as JSON sees it.
enum Kind {
    /// `undefined`, a function or a symbol: left out of an object, `null` in an array.
    Absent,
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    BigInt,
    Array(Array),
    Object(Object),
}

thread_local! {
    /// The name of the method JSON asks an object for, made once.
    static TO_JSON: JsValue = JsValue::from_str("toJSON");
}

/// A string read from JS, refused if it holds a lone surrogate (the glue would have made
/// it U+FFFD; JSON wrote it as an escape that serde_json refuses).
fn text(value: &JsValue) -> Result<Option<String>, Error> {
    let Some(s) = value.as_string() else {
        return Ok(None);
    };
    if s.contains('\u{FFFD}') && !value.unchecked_ref::<JsString>().is_valid_utf16() {
        return Err(Error(
            "a string holds a lone surrogate, which is not text".into(),
        ));
    }
    Ok(Some(s))
}

/// What `value` is as JSON, `key` its name in the object or array holding it (what JSON
/// gives a `toJSON` method).
fn classify(value: JsValue, key: &dyn Fn() -> JsValue) -> Result<Kind, Error> {
    if value.is_object() {
        let to_json = TO_JSON
            .with(|name| Reflect::get(&value, name))
            .map_err(|e| thrown(&e))?;
        if to_json.is_function() {
            let made = to_json
                .unchecked_into::<Function>()
                .call1(&value, &key())
                .map_err(|e| thrown(&e))?;
            // What `toJSON` gives is written as it is, without asking it for `toJSON`.
            return primitive(made);
        }
        return Ok(container(value));
    }
    primitive(value)
}

/// What `value` is as JSON, without asking an object for `toJSON`.
fn primitive(value: JsValue) -> Result<Kind, Error> {
    if let Some(s) = text(&value)? {
        return Ok(Kind::Text(s));
    }
    if let Some(n) = value.as_f64() {
        return Ok(Kind::Number(n));
    }
    if value.is_object() {
        return Ok(container(value));
    }
    if let Some(b) = value.as_bool() {
        return Ok(Kind::Bool(b));
    }
    if value.is_null() {
        return Ok(Kind::Null);
    }
    if value.is_bigint() {
        return Ok(Kind::BigInt);
    }
    Ok(Kind::Absent)
}

/// An object or an array.
fn container(value: JsValue) -> Kind {
    if Array::is_array(&value) {
        Kind::Array(value.unchecked_into())
    } else {
        Kind::Object(value.unchecked_into())
    }
}

/// What a JS exception said.
fn thrown(e: &JsValue) -> Error {
    let message = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "an exception".into());
    Error(format!("the value cannot be written as JSON: {message}"))
}

/// A serde deserializer over one JS value, read as its JSON text would be.
pub struct Reader {
    kind: Kind,
    /// How many more arrays and objects may nest inside this value.
    depth: u8,
}

impl Reader {
    /// The reader of a value given as an argument (as `JSON.stringify(value)` writes it).
    pub fn of(value: JsValue) -> Result<Reader, Error> {
        match classify(value, &|| JsValue::from_str(""))? {
            Kind::Absent => Err(Error("no value: JSON writes nothing of it".into())),
            kind => Ok(Reader {
                kind,
                depth: MAX_DEPTH,
            }),
        }
    }
}

/// The depth left to the values inside a container at `depth`, or the error of one nesting
/// too deep.
fn inside(depth: u8) -> Result<u8, Error> {
    match depth.checked_sub(1) {
        Some(d) if d > 0 => Ok(d),
        _ => Err(Error("recursion limit exceeded".into())),
    }
}

/// A number as serde_json reads the digits JSON writes of it.
enum Num {
    /// Not finite: JSON writes `null`.
    Null,
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

/// A number as serde_json reads the digits JSON writes of it: an integer where they are
/// whole and fit `u64` (not negative) or `i64`, else a float; `null` if not finite. (The
/// parts of the reader that do not depend on the type read are functions of their own,
/// kept out of line, so each type read does not carry a copy of them.)
#[inline(never)]
fn num(n: f64) -> Num {
    if !n.is_finite() {
        return Num::Null;
    }
    if n.fract() == 0.0 {
        if n.abs() < 9_007_199_254_740_992.0 {
            // Whole and below 2^53 in size: the casts are exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            return if n >= 0.0 {
                Num::Unsigned(n as u64)
            } else {
                Num::Signed(n as i64)
            };
        }
        // JSON writes the shortest digits that give the number back, then zeros, as
        // Rust's formatting does; serde_json reads those digits as an integer when they
        // fit.
        let digits = format!("{n}");
        if n > 0.0 {
            if let Ok(u) = digits.parse::<u64>() {
                return Num::Unsigned(u);
            }
        } else if let Ok(i) = digits.parse::<i64>() {
            return Num::Signed(i);
        }
    }
    Num::Float(n)
}

impl<'de> de::Deserializer<'de> for Reader {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.kind {
            Kind::Absent | Kind::Null => visitor.visit_unit(),
            Kind::Bool(b) => visitor.visit_bool(b),
            Kind::Number(n) => match num(n) {
                Num::Null => visitor.visit_unit(),
                Num::Unsigned(u) => visitor.visit_u64(u),
                Num::Signed(i) => visitor.visit_i64(i),
                Num::Float(f) => visitor.visit_f64(f),
            },
            Kind::Text(s) => visitor.visit_string(s),
            Kind::BigInt => Err(bigint()),
            Kind::Array(array) => {
                let mut items = Items::of(array, self.depth)?;
                let v = visitor.visit_seq(&mut items)?;
                items.finish()?;
                Ok(v)
            }
            Kind::Object(object) => visitor.visit_map(Entries::of(&object, self.depth)?),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.kind {
            Kind::Absent | Kind::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    /// A unit variant by its name, as serde_json reads one; no input of the core is an
    /// enum tagged by a key, so anything else is the type error `deserialize_any` gives.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.kind {
            Kind::Text(s) => visitor.visit_enum(s.into_deserializer()),
            _ => self.deserialize_any(visitor),
        }
    }

    /// What is ignored is not read (no input of the core ignores a field).
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.kind {
            Kind::Text(s) => visitor.visit_string(s),
            kind => Err(unexpected(&kind, &visitor)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.kind {
            Kind::Array(array) => {
                let mut items = Items::of(array, self.depth)?;
                let v = visitor.visit_seq(&mut items)?;
                items.finish()?;
                Ok(v)
            }
            kind => Err(unexpected(&kind, &visitor)),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.kind {
            Kind::Object(object) => visitor.visit_map(Entries::of(&object, self.depth)?),
            kind => Err(unexpected(&kind, &visitor)),
        }
    }

    /// A struct from an object, or from an array of its fields in order, as serde_json
    /// reads one.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.kind {
            Kind::Object(object) => visitor.visit_map(Entries::of(&object, self.depth)?),
            Kind::Array(array) => {
                let mut items = Items::of(array, self.depth)?;
                let v = visitor.visit_seq(&mut items)?;
                items.finish()?;
                Ok(v)
            }
            kind => Err(unexpected(&kind, &visitor)),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct tuple tuple_struct
    }
}

/// The error of a value of another type than the one expected, as the visitor's own
/// would say it (serde_json's words).
#[inline(never)]
fn unexpected(kind: &Kind, expected: &dyn de::Expected) -> Error {
    let n;
    let unexp = match kind {
        Kind::Absent | Kind::Null => de::Unexpected::Unit,
        Kind::Bool(b) => de::Unexpected::Bool(*b),
        Kind::Number(x) => {
            n = num(*x);
            match n {
                Num::Null => de::Unexpected::Unit,
                Num::Unsigned(u) => de::Unexpected::Unsigned(u),
                Num::Signed(i) => de::Unexpected::Signed(i),
                Num::Float(f) => de::Unexpected::Float(f),
            }
        }
        Kind::Text(s) => de::Unexpected::Str(s),
        Kind::BigInt => return bigint(),
        Kind::Array(_) => de::Unexpected::Seq,
        Kind::Object(_) => de::Unexpected::Map,
    };
    de::Error::invalid_type(unexp, expected)
}

/// The error of a `BigInt`, which JSON cannot write.
#[inline(never)]
fn bigint() -> Error {
    Error("a BigInt cannot be written as JSON: pass a number or text".into())
}

/// An array's elements, in order.
struct Items {
    array: Array,
    at: u32,
    len: u32,
    depth: u8,
}

impl Items {
    /// The elements of `array`, a container at `depth`.
    #[inline(never)]
    fn of(array: Array, depth: u8) -> Result<Items, Error> {
        let depth = inside(depth)?;
        let len = array.length();
        if len > MAX_ARRAY {
            return Err(Error(format!(
                "an array of {len} elements is longer than JSON text can hold"
            )));
        }
        Ok(Items {
            array,
            at: 0,
            len,
            depth,
        })
    }

    /// The next element, `null` where JSON writes nothing of it.
    #[inline(never)]
    fn next(&mut self) -> Result<Option<Reader>, Error> {
        if self.at >= self.len {
            return Ok(None);
        }
        let at = self.at;
        self.at += 1;
        let kind = match classify(self.array.get(at), &|| JsValue::from_str(&at.to_string()))? {
            Kind::Absent => Kind::Null,
            kind => kind,
        };
        Ok(Some(Reader {
            kind,
            depth: self.depth,
        }))
    }

    /// The error of elements left unread, as serde_json's of a longer array.
    #[inline(never)]
    fn finish(&self) -> Result<(), Error> {
        if self.at < self.len {
            return Err(de::Error::invalid_length(
                self.len as usize,
                &"fewer elements in the array",
            ));
        }
        Ok(())
    }
}

impl<'de> de::SeqAccess<'de> for Items {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.next()? {
            Some(reader) => seed.deserialize(reader).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some((self.len - self.at) as usize)
    }
}

/// An object's own enumerable properties, in order, less those JSON leaves out.
struct Entries {
    entries: Array,
    at: u32,
    len: u32,
    depth: u8,
    /// The value of the key just read.
    value: Option<Kind>,
}

impl Entries {
    /// The properties of `object`, a container at `depth`.
    #[inline(never)]
    fn of(object: &Object, depth: u8) -> Result<Entries, Error> {
        let depth = inside(depth)?;
        let entries = Object::entries(object);
        let len = entries.length();
        Ok(Entries {
            entries,
            at: 0,
            len,
            depth,
            value: None,
        })
    }

    /// The name of the next property JSON writes, its value kept for `value`.
    #[inline(never)]
    fn next_name(&mut self) -> Result<Option<String>, Error> {
        while self.at < self.len {
            let pair: Array = self.entries.get(self.at).unchecked_into();
            self.at += 1;
            let key = pair.get(0);
            let value = classify(pair.get(1), &|| key.clone())?;
            if matches!(value, Kind::Absent) {
                continue;
            }
            self.value = Some(value);
            // `Object.entries` gives string keys only.
            return Ok(Some(text(&key)?.unwrap_or_default()));
        }
        Ok(None)
    }

    /// The value of the name just read.
    #[inline(never)]
    fn value(&mut self) -> Result<Reader, Error> {
        let kind = self
            .value
            .take()
            .ok_or_else(|| Error("a value asked for before its key".into()))?;
        Ok(Reader {
            kind,
            depth: self.depth,
        })
    }
}

impl<'de> de::MapAccess<'de> for Entries {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.next_name()? {
            Some(name) => seed
                .deserialize(de::value::StringDeserializer::<Error>::new(name))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(self.value()?)
    }

    fn size_hint(&self) -> Option<usize> {
        Some((self.len - self.at) as usize)
    }
}
