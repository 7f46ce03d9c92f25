//! How a managed thing is removed once no resource declares it: the spec of its type's "absent"
//! form, recorded with it in the managed list.
//!
//! Why typed rather than a `serde_json::Value`: a device with 10,000 managed files holds 10,000 of
//! these (twice while the old list is compared with the new one), and a JSON object is a B-tree
//! node of 632 bytes; every undo the types write has one of four shapes, a name and nothing else.
//! On disk it is the same JSON object as before (keys in the order `serde_json` sorts them), and
//! a spec of another shape (a list written by another version) is kept as it was read.

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The spec that removes a managed thing, built into a resource of its type only when pruning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undo {
    /// One of the shapes the types write, with the name it removes.
    Named(Shape, String),
    /// Any other spec, as it was read.
    Spec(Value),
}

/// The shapes of [`Undo::Named`], each one JSON object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `{"path": …, "state": "absent"}`: a file or link.
    PathAbsent,
    /// `{"name": …, "state": "absent"}`: a user, an apt source.
    NameAbsent,
    /// `{"names": …, "state": "purged"}`: a package.
    NamesPurged,
    /// `{"enabled": false, "name": …, "state": "stopped"}`: a service.
    Stopped,
}

impl Shape {
    const ALL: [Shape; 4] = [
        Shape::PathAbsent,
        Shape::NameAbsent,
        Shape::NamesPurged,
        Shape::Stopped,
    ];

    /// The key holding the name, and the value of `state`.
    fn parts(self) -> (&'static str, &'static str) {
        match self {
            Shape::PathAbsent => ("path", "absent"),
            Shape::NameAbsent => ("name", "absent"),
            Shape::NamesPurged => ("names", "purged"),
            Shape::Stopped => ("name", "stopped"),
        }
    }

    fn disables(self) -> bool {
        self == Shape::Stopped
    }
}

impl Undo {
    pub fn path_absent(path: &str) -> Self {
        Undo::Named(Shape::PathAbsent, path.to_string())
    }
    pub fn name_absent(name: &str) -> Self {
        Undo::Named(Shape::NameAbsent, name.to_string())
    }
    pub fn names_purged(name: &str) -> Self {
        Undo::Named(Shape::NamesPurged, name.to_string())
    }
    pub fn stopped(unit: &str) -> Self {
        Undo::Named(Shape::Stopped, unit.to_string())
    }

    /// The spec, for the type's `build`: the JSON object [`Serialize`] writes.
    pub fn spec(&self) -> Value {
        match self {
            Undo::Spec(spec) => spec.clone(),
            named => serde_json::to_value(named).expect("an object of strings and a bool"),
        }
    }

    /// The typed form of a spec when it has one of the [`Shape`]s, else the spec itself.
    fn from_fields(mut fields: Vec<(String, Value)>) -> Self {
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        for shape in Shape::ALL {
            let (field, state) = shape.parts();
            let named = match (shape.disables(), fields.as_mut_slice()) {
                (false, [(f, Value::String(name)), (s, Value::String(v))])
                | (
                    true,
                    [(_, Value::Bool(false)), (f, Value::String(name)), (s, Value::String(v))],
                ) if f == field && s == "state" && v == state => Some(std::mem::take(name)),
                _ => None,
            };
            if let Some(name) = named {
                return Undo::Named(shape, name);
            }
        }
        Undo::Spec(Value::Object(fields.into_iter().collect()))
    }
}

impl Serialize for Undo {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Undo::Named(shape, name) => {
                let (field, state) = shape.parts();
                let mut map = serializer.serialize_map(Some(2 + usize::from(shape.disables())))?;
                if shape.disables() {
                    map.serialize_entry("enabled", &false)?;
                }
                map.serialize_entry(field, name)?;
                map.serialize_entry("state", state)?;
                map.end()
            }
            Undo::Spec(spec) => spec.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Undo {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Undo;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a resource spec (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Undo, A::Error> {
                let mut fields = Vec::with_capacity(3);
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    fields.push((key, value));
                }
                Ok(Undo::from_fields(fields))
            }
        }
        deserializer
            .deserialize_map(Fields)
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_typed_undo_reads_and_writes_as_the_json_spec_it_stands_for() {
        let cases = [
            (
                Undo::path_absent("/etc/x"),
                json!({"path": "/etc/x", "state": "absent"}),
            ),
            (
                Undo::name_absent("kiosk"),
                json!({"name": "kiosk", "state": "absent"}),
            ),
            (
                Undo::names_purged("curl"),
                json!({"names": "curl", "state": "purged"}),
            ),
            (
                Undo::stopped("kiosk.service"),
                json!({"name": "kiosk.service", "enabled": false, "state": "stopped"}),
            ),
        ];
        for (undo, spec) in cases {
            assert_eq!(undo.spec(), spec);
            assert_eq!(
                serde_json::to_string_pretty(&undo).unwrap(),
                serde_json::to_string_pretty(&spec).unwrap(),
                "the same bytes on disk as the JSON object"
            );
            let read: Undo = serde_json::from_value(spec.clone()).unwrap();
            assert_eq!(read, undo, "{spec}");
        }
    }

    #[test]
    fn an_undo_of_another_shape_is_kept_as_it_was_read() {
        for spec in [
            json!({"path": "/x", "state": "directory"}),
            json!({"path": "/x", "state": "absent", "force": true}),
            json!({"name": "kiosk", "enabled": true, "state": "stopped"}),
            json!({"names": ["a", "b"], "state": "purged"}),
            json!({}),
        ] {
            let read: Undo = serde_json::from_value(spec.clone()).unwrap();
            assert_eq!(read, Undo::Spec(spec.clone()));
            assert_eq!(read.spec(), spec);
            assert_eq!(serde_json::to_value(&read).unwrap(), spec);
        }
        assert!(serde_json::from_value::<Undo>(json!("absent")).is_err());
    }
}
