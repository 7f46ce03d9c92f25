//! The management side of the double: Mender's inventory search, as `tend gate` and any other
//! management API client calls it.
//!
//! `POST /api/management/v2/inventory/filters/search` (inventory service, management API v2), as
//! published and as the inventory service implements it:
//! - a personal access token (a user JWT) as `Authorization: Bearer`; device tokens, forged,
//!   expired or revoked tokens get 401;
//! - a JSON body `{page, per_page, filters, sort, attributes}`: `page` below 1 means 1, `per_page`
//!   below 1 means 20; each filter needs a known scope (`system`, `identity`, `inventory`,
//!   `monitor`, `tags`), an attribute, a type (`$eq`, `$in`, `$nin`) and a non-null value, else
//!   400; filters are combined with "and"; `$eq` on a list attribute matches any element, and
//!   `$nin` also matches devices without the attribute (MongoDB's semantics, which the service
//!   inherits);
//! - 200 with a JSON list of `{id, attributes: [{name, scope, value}], updated_ts}` for the page
//!   (only the `attributes` asked for, when any are), and the number of matching devices in
//!   `X-Total-Count`. Without `sort`, devices come in a stable order (by id here).

use std::cmp::Ordering;

use serde_json::json;

use super::*;

pub const SEARCH_PATH: &str = "/api/management/v2/inventory/filters/search";
const SCOPES: &[&str] = &["system", "identity", "inventory", "monitor", "tags"];
const TYPES: &[&str] = &["$eq", "$in", "$nin"];
const PER_PAGE_DEFAULT: usize = 20;

/// One attribute of a device, as the search returns it.
#[derive(Clone, Debug)]
struct Attr {
    scope: String,
    name: String,
    value: Value,
}

struct Filter {
    scope: String,
    attribute: String,
    kind: String,
    value: Value,
}

struct Sort {
    scope: String,
    attribute: String,
    descending: bool,
}

struct Params {
    page: usize,
    per_page: usize,
    filters: Vec<Filter>,
    sort: Vec<Sort>,
    select: Vec<(String, String)>,
}

impl Shared {
    pub(super) fn search(&self, req: &wire::HttpRequest, auth: &Auth) -> Response {
        if !matches!(auth, Auth::User(_)) {
            return unauthorized();
        }
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(other) => {
                return error(
                    400,
                    &format!("failed to decode request body: not an object: {other}"),
                )
            }
            Err(e) => return error(400, &format!("failed to decode request body: {e}")),
        };
        let params = match parse_params(&body) {
            Ok(p) => p,
            Err(why) => return error(400, &why),
        };
        let mut state = self.lock();
        state.searches.push(body);
        let mut matched: Vec<(String, Vec<Attr>)> = state
            .inventory
            .keys()
            .map(|id| (id.clone(), device_attributes(&state, id)))
            .filter(|(_, attrs)| params.filters.iter().all(|f| f.matches(attrs)))
            .collect();
        matched.sort_by(|a, b| compare(&params.sort, &a.1, &b.1));
        let total = matched.len();
        let page: Vec<Value> = matched
            .into_iter()
            .skip((params.page - 1).saturating_mul(params.per_page))
            .take(params.per_page)
            .map(|(id, attrs)| {
                let shown: Vec<Value> = attrs
                    .iter()
                    .filter(|a| {
                        params.select.is_empty()
                            || params
                                .select
                                .iter()
                                .any(|(s, n)| *s == a.scope && *n == a.name)
                    })
                    .map(|a| json!({"name": a.name, "scope": a.scope, "value": a.value}))
                    .collect();
                let updated = state.updated.get(&id).copied().unwrap_or_default();
                json!({"id": id, "attributes": shown, "updated_ts": rfc3339(updated)})
            })
            .collect();
        Response {
            status: 200,
            content_type: "application/json",
            headers: vec![("X-Total-Count", total.to_string())],
            body: Value::Array(page).to_string().into_bytes(),
        }
    }
}

fn parse_params(body: &Value) -> Result<Params, String> {
    let number = |key: &str, default: usize| -> Result<usize, String> {
        match &body[key] {
            Value::Null => Ok(default),
            Value::Number(n) => match n.as_i64() {
                Some(i) if i >= 1 => Ok(i as usize),
                Some(_) => Ok(default),
                None => Err(format!(
                    "failed to decode request body: {key}: {n} is not an integer"
                )),
            },
            other => Err(format!(
                "failed to decode request body: {key}: {other} is not a number"
            )),
        }
    };
    let list = |key: &str| -> Result<Vec<Value>, String> {
        match &body[key] {
            Value::Null => Ok(Vec::new()),
            Value::Array(a) => Ok(a.clone()),
            other => Err(format!(
                "failed to decode request body: {key}: {other} is not a list"
            )),
        }
    };
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or("").to_string();
    let required = |v: &Value, key: &str| -> Result<String, String> {
        let t = text(v, key);
        if t.is_empty() {
            Err(format!("{key}: cannot be blank."))
        } else {
            Ok(t)
        }
    };
    let scope = |v: &Value| -> Result<String, String> {
        let s = required(v, "scope")?;
        if SCOPES.contains(&s.as_str()) {
            Ok(s)
        } else {
            Err(format!("scope: must be one of {}.", SCOPES.join(", ")))
        }
    };
    let mut filters = Vec::new();
    for f in list("filters")? {
        let scope = scope(&f)?;
        let attribute = required(&f, "attribute")?;
        let kind = required(&f, "type")?;
        if !TYPES.contains(&kind.as_str()) {
            return Err("type: must be a valid value.".into());
        }
        if f["value"].is_null() {
            return Err("value: is required.".into());
        }
        if kind != "$eq" && !f["value"].is_array() {
            return Err(format!("BadValue: {kind} needs an array"));
        }
        filters.push(Filter {
            scope,
            attribute,
            kind,
            value: f["value"].clone(),
        });
    }
    let mut sort = Vec::new();
    for s in list("sort")? {
        let scope = scope(&s)?;
        let attribute = required(&s, "attribute")?;
        let order = required(&s, "order")?;
        if order != "asc" && order != "desc" {
            return Err("order: must be a valid value.".into());
        }
        sort.push(Sort {
            scope,
            attribute,
            descending: order == "desc",
        });
    }
    let mut select = Vec::new();
    for a in list("attributes")? {
        select.push((scope(&a)?, required(&a, "attribute")?));
    }
    Ok(Params {
        page: number("page", 1)?,
        per_page: number("per_page", PER_PAGE_DEFAULT)?,
        filters,
        sort,
        select,
    })
}

impl Filter {
    fn matches(&self, attrs: &[Attr]) -> bool {
        let found = attrs
            .iter()
            .find(|a| a.scope == self.scope && a.name == self.attribute);
        let values: Vec<&Value> = match found.map(|a| &a.value) {
            None => Vec::new(),
            Some(Value::Array(items)) => items.iter().collect(),
            Some(v) => vec![v],
        };
        let any_in = |wanted: &Value| match wanted {
            Value::Array(set) => values.iter().any(|v| set.contains(v)),
            _ => false,
        };
        match self.kind.as_str() {
            "$eq" => values.contains(&&self.value),
            "$in" => any_in(&self.value),
            _ => !any_in(&self.value),
        }
    }
}

/// What the search sees of a device: its inventory, plus its identity data when it
/// authenticated with this server.
fn device_attributes(state: &State, id: &str) -> Vec<Attr> {
    let mut out: Vec<Attr> = Vec::new();
    if let Some(identity) = state
        .devices
        .iter()
        .find(|(_, d)| d.as_str() == id)
        .and_then(|(identity, _)| serde_json::from_str::<Value>(identity).ok())
    {
        if let Value::Object(map) = identity {
            for (name, value) in map {
                out.push(Attr {
                    scope: "identity".into(),
                    name,
                    value,
                });
            }
        }
        out.push(Attr {
            scope: "identity".into(),
            name: "status".into(),
            value: Value::String("accepted".into()),
        });
    }
    if let Some(inventory) = state.inventory.get(id) {
        for (name, value) in inventory {
            out.push(Attr {
                scope: "inventory".into(),
                name: name.clone(),
                value: value.clone(),
            });
        }
    }
    out
}

fn compare(sort: &[Sort], a: &[Attr], b: &[Attr]) -> Ordering {
    for s in sort {
        let get = |attrs: &[Attr]| {
            attrs
                .iter()
                .find(|x| x.scope == s.scope && x.name == s.attribute)
                .map(|x| x.value.clone())
        };
        let ord = rank(get(a).as_ref()).partial_cmp(&rank(get(b).as_ref()));
        let ord = ord.unwrap_or(Ordering::Equal);
        let ord = if s.descending { ord.reverse() } else { ord };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// MongoDB's order across types: missing (null) < numbers < strings.
fn rank(v: Option<&Value>) -> (u8, f64, String) {
    match v {
        None | Some(Value::Null) => (0, 0.0, String::new()),
        Some(Value::Number(n)) => (1, n.as_f64().unwrap_or_default(), String::new()),
        Some(Value::String(s)) => (2, 0.0, s.clone()),
        Some(other) => (3, 0.0, other.to_string()),
    }
}

/// Unix seconds as RFC 3339 UTC (civil-from-days, proleptic Gregorian), as `tend inventory`
/// writes `tend_last_run`.
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, Value)]) -> Vec<Attr> {
        pairs
            .iter()
            .map(|(n, v)| Attr {
                scope: "inventory".into(),
                name: n.to_string(),
                value: v.clone(),
            })
            .collect()
    }

    fn filter(kind: &str, value: Value) -> Filter {
        Filter {
            scope: "inventory".into(),
            attribute: "tend_branch".into(),
            kind: kind.into(),
            value,
        }
    }

    #[test]
    fn eq_in_and_nin_follow_mongodb() {
        let canary = attrs(&[("tend_branch", json!("canary"))]);
        let list = attrs(&[("tend_branch", json!(["main", "canary"]))]);
        let none = attrs(&[]);
        let eq = filter("$eq", json!("canary"));
        assert!(eq.matches(&canary) && eq.matches(&list) && !eq.matches(&none));
        assert!(!filter("$eq", json!("main")).matches(&canary));
        let within = filter("$in", json!(["canary", "x"]));
        assert!(within.matches(&canary) && !within.matches(&none));
        let nin = filter("$nin", json!(["canary"]));
        assert!(!nin.matches(&canary) && nin.matches(&none));
    }

    #[test]
    fn bad_filters_are_refused_as_the_service_does() {
        let bad = |f: Value| parse_params(&json!({ "filters": [f] })).err().unwrap();
        let ok = json!({"scope": "inventory", "attribute": "a", "type": "$eq", "value": "x"});
        assert!(parse_params(&json!({ "filters": [ok] })).is_ok());
        assert!(
            bad(json!({"scope": "device", "attribute": "a", "type": "$eq", "value": "x"}))
                .contains("scope: must be one of")
        );
        assert!(bad(
            json!({"scope": "inventory", "attribute": "a", "type": "$regex", "value": "x"})
        )
        .contains("type"));
        assert!(
            bad(json!({"scope": "inventory", "attribute": "a", "type": "$eq"})).contains("value")
        );
        assert!(
            bad(json!({"scope": "inventory", "type": "$eq", "value": "x"})).contains("attribute")
        );
        let p = parse_params(&json!({"page": 0, "per_page": -5})).unwrap();
        assert_eq!((p.page, p.per_page), (1, PER_PAGE_DEFAULT));
        assert!(parse_params(&json!({"page": "2"})).is_err());
    }

    #[test]
    fn sorting_puts_missing_values_first_ascending() {
        let sort = [Sort {
            scope: "inventory".into(),
            attribute: "n".into(),
            descending: false,
        }];
        let a = attrs(&[("n", json!(2))]);
        let b = attrs(&[("n", json!(10))]);
        let none = attrs(&[]);
        assert_eq!(compare(&sort, &a, &b), Ordering::Less);
        assert_eq!(compare(&sort, &none, &a), Ordering::Less);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
    }
}
