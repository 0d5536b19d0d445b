//! The shapes older clients speak, so that they can move to raccoond
//! unchanged: Raccoon's `POST /api/tasks/` and flask-tasks' `POST
//! /task/new` and `GET /task/<id>/view`.
//!
//! Only translation: a submission is turned into a native job and goes
//! through the same [`Api::submit`] (the same `job::parse`, the same
//! `spool::submit`); a view is built from the same `spool::query`. It never
//! writes a spool file any other way and never decides anything about a
//! job. Raccoon's errors are spelled its way by the caller (see
//! `Dialect`), not here.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::routes::json_kind;
use super::{Answer, Api, Exchange, Reply, fail, not_found};
use crate::config::Config;
use crate::spool::query::Located;
use crate::time;
use crate::values;

impl Api {
    /// `POST /api/tasks/`, Raccoon's shape: `{"type", "params", "email"}`.
    pub(super) fn raccoon_submit(&self, ex: &mut Exchange, config: &Config) -> Answer {
        let mut body = Self::json_body(ex, config)?;
        // Raccoon's clients send `"email": null` for "no mail".
        body.retain(|_, v| !v.is_null());
        let id = self.submit(body, config)?;
        Ok(Reply::json(201, &json!({ "status": "OK", "id": id })))
    }

    /// `POST /task/new`, flask-tasks' shape: `{"type", "args"}` where args
    /// are the params.
    pub(super) fn flask_submit(&self, ex: &mut Exchange, config: &Config) -> Answer {
        let mut body = Self::json_body(ex, config)?;
        let args = match body.remove("args") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(o)) => o,
            Some(other) => {
                return Err(fail(
                    422,
                    format!(
                        "args: expected an object of params, not {}",
                        json_kind(&other)
                    ),
                ));
            }
        };
        if !args.is_empty() {
            body.insert("params".into(), Value::Object(args.clone()));
        }
        let id = self.submit(body, config)?;
        Ok(Reply::json(
            201,
            &json!({
                "id": id,
                "result": null,
                "args": args,
                "status": "waiting",
                "expire": null,
                "created": time::unix_secs(time::now()),
            }),
        ))
    }

    /// `GET /task/<id>/view`, flask-tasks' shape.
    pub(super) fn flask_view(&self, id: &str) -> Answer {
        let found = self
            .find(id)?
            .ok_or_else(|| not_found(format!("no job {id:?}")))?;
        let v = match found {
            Located::Finished(r) => {
                let created = r
                    .submitted
                    .as_ref()
                    .and_then(|d| time::from_toml(d).ok())
                    .map_or(Value::Null, |t| json!(time::unix_secs(t)));
                json!({
                    "id": id,
                    "result": r.result.as_ref().map_or(Value::Null, values::toml_to_json),
                    "args": r.params.as_ref().map_or(json!({}), |p| values::toml_to_json(&toml::Value::Table(p.clone()))),
                    "status": "done",
                    "expire": r.expires_at().map_or(Value::Null, |t| json!(time::unix_secs(t))),
                    "created": created,
                })
            }
            Located::Queued { table, written } => pending_view(id, "waiting", &table, written),
            Located::Running { table, written, .. } => pending_view(id, "running", &table, written),
        };
        Ok(Reply::json(200, &v))
    }
}

/// flask-tasks' view of a job that has not finished.
fn pending_view(id: &str, status: &str, table: &toml::Table, written: SystemTime) -> Value {
    let submitted = table
        .get("submitted")
        .and_then(toml::Value::as_datetime)
        .and_then(|d| time::from_toml(d).ok());
    let created = match submitted {
        Some(t) => json!(time::unix_secs(t)),
        None if written > SystemTime::UNIX_EPOCH => json!(time::unix_secs(written)),
        None => Value::Null,
    };
    json!({
        "id": id,
        "result": null,
        "args": table.get("params").map_or(json!({}), values::toml_to_json),
        "status": status,
        "expire": null,
        "created": created,
    })
}
