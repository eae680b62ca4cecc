//! `--namespace-selector`: kubectl's label-selector syntax, parsed into a
//! [`NamespaceSelector`]. Terms are comma-separated (commas inside `(...)` belong to
//! the set): `key=value`, `key==value`, `key!=value`, `key in (a,b)`,
//! `key notin (a,b)`, `key` (exists), `!key` (does not exist).

use std::collections::BTreeMap;

use sealcred_shared::crd::{NamespaceSelector, SelectorOperator, SelectorRequirement};

fn split_terms(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced parentheses".into());
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    out.push(&s[start..]);
    Ok(out)
}

fn check_key(key: &str, n: usize) -> Result<String, String> {
    let ok = !key.is_empty()
        && key.len() <= 317
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if ok {
        Ok(key.to_string())
    } else {
        Err(format!("term {n}: invalid label key"))
    }
}

fn set(values: &str, n: usize) -> Result<Vec<String>, String> {
    let inner = values
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| format!("term {n}: expected a set in parentheses, `(a,b)`"))?;
    let vals: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if vals.is_empty() {
        return Err(format!("term {n}: empty set"));
    }
    Ok(vals)
}

/// Parses a selector. Errors name the term by position (1-based), never its value.
pub fn parse(s: &str) -> Result<NamespaceSelector, String> {
    let mut match_labels = BTreeMap::new();
    let mut match_expressions = Vec::new();
    for (i, term) in split_terms(s)?.into_iter().enumerate() {
        let n = i + 1;
        let term = term.trim();
        if term.is_empty() {
            return Err(format!("term {n} is empty"));
        }
        let req = |key: &str, operator, values| -> Result<SelectorRequirement, String> {
            Ok(SelectorRequirement {
                key: check_key(key.trim(), n)?,
                operator,
                values,
            })
        };
        if let Some((k, v)) = term.split_once("!=") {
            match_expressions.push(req(k, SelectorOperator::NotIn, vec![v.trim().to_string()])?);
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            match_labels.insert(check_key(k.trim(), n)?, v.trim().to_string());
        } else if let Some((k, v)) = term.split_once(" notin ") {
            match_expressions.push(req(k, SelectorOperator::NotIn, set(v, n)?)?);
        } else if let Some((k, v)) = term.split_once(" in ") {
            match_expressions.push(req(k, SelectorOperator::In, set(v, n)?)?);
        } else if let Some(k) = term.strip_prefix('!') {
            match_expressions.push(req(k, SelectorOperator::DoesNotExist, vec![])?);
        } else {
            match_expressions.push(req(term, SelectorOperator::Exists, vec![])?);
        }
    }
    let sel = NamespaceSelector {
        match_labels,
        match_expressions,
    };
    sel.check()?;
    Ok(sel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_syntax() {
        let s =
            parse("sealcred.io/flyte=true, env notin (production,staging),team,!legacy").unwrap();
        assert_eq!(s.match_labels["sealcred.io/flyte"], "true");
        let ops: Vec<_> = s
            .match_expressions
            .iter()
            .map(|r| (r.key.as_str(), r.operator, r.values.len()))
            .collect();
        assert_eq!(
            ops,
            [
                ("env", SelectorOperator::NotIn, 2),
                ("team", SelectorOperator::Exists, 0),
                ("legacy", SelectorOperator::DoesNotExist, 0)
            ]
        );
        let s = parse("a in (x), b!=y, c==z").unwrap();
        assert_eq!(s.match_expressions[0].operator, SelectorOperator::In);
        assert_eq!(s.match_expressions[1].operator, SelectorOperator::NotIn);
        assert_eq!(s.match_labels["c"], "z");
    }

    #[test]
    fn errors_name_the_term_not_the_value() {
        for (bad, want) in [
            ("", "term 1 is empty"),
            ("a=b,,c", "term 2 is empty"),
            ("a in x", "term 1: expected a set"),
            ("a in ()", "term 1: empty set"),
            ("a=b,c in (x", "unbalanced"),
            ("bad key!x", "term 1: invalid label key"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }
}
