//! Parsers: the formats log lines are written in, turned into fields for
//! the JSON envelope (`parse = "..."`). JSON lines are placed as written
//! (`envelope`); the others give a list of fields here.
//!
//! Field names follow Fluent Bit's parsers (`apache2`, `syslog-rfc3164`,
//! `syslog-rfc5424`), the names most pipelines that read these formats
//! already use: `host`, `user`, `method`, `path`, `code`, `size`,
//! `referer`, `agent` for access logs; `pri`, `time`, `host`, `ident`,
//! `pid`, `msgid`, `extradata`, `message` for syslog. Numbers are numbers
//! where the format says so (`code`, `size`, `pid`, `pri`); `types` makes
//! them so for logfmt, CSV and regex fields.
//!
//! Pure: a line in, its fields (or `None`: the line does not match, and is
//! sent as a message and counted) out.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::re::Re;

/// How a line is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Json,
    Logfmt,
    /// `%h %l %u %t "%r" %>s %b`.
    ApacheCommon,
    /// Common, then `"%{Referer}i" "%{User-agent}i"` (Nginx's default too).
    ApacheCombined,
    /// Apache's error log, 2.2 (`[time] [level] message`) and 2.4 (`[time]
    /// [module:level] [pid N:tid N] [client A] message`).
    ApacheError,
    /// RFC 3164 and RFC 5424, told apart per line.
    Syslog,
    Csv {
        fields: Vec<String>,
        delimiter: u8,
    },
    /// Named captures become fields.
    Regex(Re),
}

/// What a field is converted to (`types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Float,
    Bool,
}

/// One field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Value {
    /// `s` as `kind`, or as a string when it does not read as one.
    fn typed(s: &str, kind: Option<Kind>) -> Value {
        match kind {
            Some(Kind::Int) => s.parse().map_or_else(|_| Value::Str(s.into()), Value::Int),
            Some(Kind::Float) => s
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map_or_else(|| Value::Str(s.into()), Value::Float),
            Some(Kind::Bool) => match s {
                "true" | "TRUE" | "True" | "1" | "yes" => Value::Bool(true),
                "false" | "FALSE" | "False" | "0" | "no" => Value::Bool(false),
                _ => Value::Str(s.into()),
            },
            None => Value::Str(s.into()),
        }
    }

    /// Appends the value as JSON.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::Str(s) => {
                // Writing into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, s);
            }
            Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
            Value::Float(f) => out.extend_from_slice(f.to_string().as_bytes()),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        }
    }
}

/// A line's fields, in the order they are written. Names are the
/// format's own (borrowed) or the line's (logfmt keys, CSV columns, regex
/// groups).
pub type Fields = Vec<(Cow<'static, str>, Value)>;

/// Parses `line` as `format` (not JSON: the envelope places JSON as written),
/// converting fields named in `types`. `None` when it does not match.
pub fn parse(format: &Format, types: &BTreeMap<String, Kind>, line: &[u8]) -> Option<Fields> {
    let text = String::from_utf8_lossy(line);
    let text = text.as_ref();
    let mut fields = match format {
        Format::Json => return None,
        Format::Logfmt => logfmt(text)?,
        Format::ApacheCommon => access(text, false)?,
        Format::ApacheCombined => access(text, true)?,
        Format::ApacheError => apache_error(text)?,
        Format::Syslog => syslog(text)?,
        Format::Csv { fields, delimiter } => csv(text, fields, *delimiter)?,
        Format::Regex(re) => regex(re, line)?,
    };
    if !types.is_empty() {
        for (name, value) in &mut fields {
            if let (Some(kind), Value::Str(s)) = (types.get(name.as_ref()), &*value) {
                *value = Value::typed(s, Some(*kind));
            }
        }
    }
    Some(fields)
}

fn s(name: &'static str, value: &str) -> (Cow<'static, str>, Value) {
    (Cow::Borrowed(name), Value::Str(value.to_string()))
}

/// `key=value key="quoted \" value" flag`: a bare key is `true`. At least
/// one `key=` pair, or it is not logfmt.
fn logfmt(text: &str) -> Option<Fields> {
    let mut out = Fields::new();
    let mut rest = text.trim();
    let mut pairs = 0;
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        if key.is_empty() || key.contains('"') {
            return None;
        }
        rest = &rest[key_end..];
        if let Some(after) = rest.strip_prefix('=') {
            pairs += 1;
            let (value, next) = match after.strip_prefix('"') {
                Some(quoted) => quoted_value(quoted)?,
                None => {
                    let end = after.find(char::is_whitespace).unwrap_or(after.len());
                    (after[..end].to_string(), &after[end..])
                }
            };
            out.push((Cow::Owned(key.to_string()), Value::Str(value)));
            rest = next;
        } else {
            out.push((Cow::Owned(key.to_string()), Value::Bool(true)));
        }
        rest = rest.trim_start();
    }
    (pairs > 0).then_some(out)
}

/// The value of a quoted string (after its opening quote), with `\"` and
/// `\\` unescaped, and what follows its closing quote.
fn quoted_value(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, 't')) => value.push('\t'),
                Some((_, e)) => value.push(e),
                None => return None,
            },
            c => value.push(c),
        }
    }
    None
}

/// A `[...]` group at the start of `s`: its inside and what follows.
fn bracketed(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('[')?;
    let end = inner.find(']')?;
    Some((&inner[..end], inner[end + 1..].trim_start()))
}

/// A `"..."` group at the start of `s` (with `\"` inside kept as written).
fn quoted(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('"')?;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some((&inner[..i], inner[i + 1..].trim_start())),
            _ => escaped = false,
        }
    }
    None
}

/// The next space-separated word of `s` and what follows.
fn word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find(' ').unwrap_or(s.len());
    Some((&s[..end], s[end..].trim_start()))
}

/// A number field, absent when it is `-`.
fn number(name: &'static str, v: &str, out: &mut Fields) -> Option<()> {
    if v != "-" {
        out.push((Cow::Borrowed(name), Value::Int(v.parse().ok()?)));
    }
    Some(())
}

/// Apache common or combined (Nginx's default `combined` is the same).
fn access(text: &str, combined: bool) -> Option<Fields> {
    let mut out = Fields::new();
    let (host, rest) = word(text)?;
    let (ident, rest) = word(rest)?;
    let (user, rest) = word(rest)?;
    let (time, rest) = bracketed(rest)?;
    let (request, rest) = quoted(rest)?;
    let (code, rest) = word(rest)?;
    let (size, rest) = word(rest)?;
    out.push(s("host", host));
    if ident != "-" {
        out.push(s("ident", ident));
    }
    out.push(s("user", user));
    out.push(s("time", time));
    let mut parts = request.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(path), protocol) if !method.is_empty() => {
            out.push(s("method", method));
            out.push(s("path", path));
            if let Some(p) = protocol {
                out.push(s("protocol", p));
            }
        }
        // A request line that is not `METHOD PATH PROTOCOL` (a probe, `-`).
        _ => out.push(s("request", request)),
    }
    number("code", code, &mut out)?;
    number("size", size, &mut out)?;
    if combined {
        let (referer, rest) = quoted(rest)?;
        let (agent, rest) = quoted(rest)?;
        out.push(s("referer", referer));
        out.push(s("agent", agent));
        if !rest.is_empty() {
            return None;
        }
    } else if !rest.is_empty() {
        return None;
    }
    Some(out)
}

/// Apache's error log: `[time] [level] message` (2.2), or `[time]
/// [module:level] [pid N:tid N] [client A] message` (2.4).
fn apache_error(text: &str) -> Option<Fields> {
    let mut out = Fields::new();
    let (time, rest) = bracketed(text)?;
    let (level, mut rest) = bracketed(rest)?;
    out.push(s("time", time));
    match level.split_once(':') {
        Some((module, level)) => {
            out.push(s("module", module));
            out.push(s("level", level));
        }
        None => out.push(s("level", level)),
    }
    while let Some((group, after)) = bracketed(rest) {
        if let Some(p) = group.strip_prefix("pid ") {
            let (pid, tid) = match p.split_once(":tid ") {
                Some((pid, tid)) => (pid, Some(tid)),
                None => (p, None),
            };
            number("pid", pid, &mut out)?;
            if let Some(tid) = tid {
                number("tid", tid, &mut out)?;
            }
        } else if let Some(c) = group.strip_prefix("client ") {
            out.push(s("client", c));
        } else {
            break;
        }
        rest = after;
    }
    out.push(s("message", rest));
    Some(out)
}

/// RFC 5424 when the priority is followed by a version, else RFC 3164.
fn syslog(text: &str) -> Option<Fields> {
    let (pri, rest) = match text.strip_prefix('<') {
        Some(p) => {
            let end = p.find('>')?;
            let pri: u8 = p[..end].parse().ok().filter(|v| *v <= 191)?;
            (Some(pri), &p[end + 1..])
        }
        None => (None, text),
    };
    let mut out = Fields::new();
    if let Some(p) = pri {
        out.push(("pri".into(), Value::Int(p.into())));
    }
    if let Some(after) = rest.strip_prefix("1 ").filter(|_| pri.is_some()) {
        rfc5424(after, &mut out)?;
    } else {
        rfc3164(rest, &mut out)?;
    }
    Some(out)
}

/// `TIMESTAMP HOST APP PROCID MSGID [SD...] MSG`, `-` for a field left out.
fn rfc5424(text: &str, out: &mut Fields) -> Option<()> {
    let (time, rest) = word(text)?;
    let (host, rest) = word(rest)?;
    let (app, rest) = word(rest)?;
    let (pid, rest) = word(rest)?;
    let (msgid, rest) = word(rest)?;
    for (name, v) in [("time", time), ("host", host), ("ident", app)] {
        if v != "-" {
            out.push(s(name, v));
        }
    }
    if pid != "-" {
        out.push(match pid.parse::<i64>() {
            Ok(n) => ("pid".into(), Value::Int(n)),
            Err(_) => s("pid", pid),
        });
    }
    if msgid != "-" {
        out.push(s("msgid", msgid));
    }
    let rest = if let Some(after) = rest.strip_prefix('-') {
        after.trim_start()
    } else if rest.starts_with('[') {
        // Structured data: `[id k="v" ...]` elements up to the message;
        // a `]` inside a quoted value is escaped as `\]`.
        let mut end = 0;
        let mut escaped = false;
        let mut depth = 0;
        for (i, c) in rest.char_indices() {
            match c {
                '\\' if !escaped => {
                    escaped = true;
                    continue;
                }
                '[' if !escaped => depth += 1,
                ']' if !escaped => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        if !rest[end..].starts_with('[') {
                            break;
                        }
                    }
                }
                _ => {}
            }
            escaped = false;
        }
        if end == 0 {
            return None;
        }
        out.push(s("extradata", &rest[..end]));
        rest[end..].trim_start()
    } else {
        return None;
    };
    // A BOM before a UTF-8 message.
    out.push(s("message", rest.trim_start_matches('\u{feff}')));
    Some(())
}

/// `Mmm dd hh:mm:ss HOST IDENT[PID]: MESSAGE` (the year-less BSD form; the
/// ident and pid are optional, as daemons write them).
fn rfc3164(text: &str, out: &mut Fields) -> Option<()> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = text.get(..3)?;
    if !MONTHS.contains(&month) {
        return None;
    }
    // `Jun  4` pads the day with a space.
    let (day, rest) = word(&text[3..])?;
    let (clock, rest) = word(rest)?;
    let digits_ok = day.len() <= 2 && day.bytes().all(|b| b.is_ascii_digit());
    let clock_ok = clock.len() == 8 && clock.bytes().filter(|b| *b == b':').count() == 2;
    if !digits_ok || !clock_ok {
        return None;
    }
    // As written when the day is padded to two (`Jun  4`, `Jun 14`).
    let written = text
        .get(..15)
        .filter(|t| t.len() == 15 && t.as_bytes()[6] == b' ');
    match written {
        Some(t) if t.ends_with(clock) && t[4..6].trim_start() == day => out.push(s("time", t)),
        _ => out.push(s("time", &format!("{month} {day:>2} {clock}"))),
    }
    let (host, rest) = word(rest)?;
    out.push(s("host", host));
    // `ident[pid]: message`, `ident: message`, or only a message.
    let tag_end = rest.find(": ").filter(|i| !rest[..*i].contains(' '));
    match tag_end {
        Some(i) => {
            let tag = &rest[..i];
            match tag.strip_suffix(']').and_then(|t| t.rsplit_once('[')) {
                Some((ident, pid)) => {
                    out.push(s("ident", ident));
                    out.push(match pid.parse::<i64>() {
                        Ok(n) => ("pid".into(), Value::Int(n)),
                        Err(_) => s("pid", pid),
                    });
                }
                None => out.push(s("ident", tag)),
            }
            out.push(s("message", &rest[i + 2..]));
        }
        None => out.push(s("message", rest)),
    }
    Some(())
}

/// A CSV line with the names in `fields` (quoted fields with `""` inside,
/// as RFC 4180 writes them). Extra columns are `column_N`; a line with
/// fewer columns than names gives what it has.
fn csv(text: &str, names: &[String], delimiter: u8) -> Option<Fields> {
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(text.as_bytes());
    let record = reader.records().next()?.ok()?;
    let mut out = Fields::new();
    for (i, v) in record.iter().enumerate() {
        let name = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("column_{}", i + 1));
        out.push((Cow::Owned(name), Value::Str(v.to_string())));
    }
    Some(out)
}

/// The named captures of `re` that matched (invalid UTF-8 in a capture
/// becomes U+FFFD).
fn regex(re: &Re, line: &[u8]) -> Option<Fields> {
    let caps = re.captures(line)?;
    let mut out = Fields::new();
    for name in re.capture_names().flatten() {
        if let Some(m) = caps.name(name) {
            let value = String::from_utf8_lossy(m.as_bytes()).into_owned();
            out.push((Cow::Owned(name.to_string()), Value::Str(value)));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(format: &Format, line: &str) -> Option<Fields> {
        parse(format, &BTreeMap::new(), line.as_bytes())
    }

    fn get<'a>(f: &'a Fields, name: &str) -> Option<&'a Value> {
        f.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn text(v: &str) -> Option<Value> {
        Some(Value::Str(v.into()))
    }

    #[test]
    fn combined_access_lines_with_their_awkward_cases() {
        let f = fields(
            &Format::ApacheCombined,
            r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#,
        )
        .expect("combined");
        assert_eq!(get(&f, "host").cloned(), text("127.0.0.1"));
        assert_eq!(get(&f, "user").cloned(), text("frank"));
        assert_eq!(get(&f, "time").cloned(), text("10/Oct/2000:13:55:36 -0700"));
        assert_eq!(get(&f, "method").cloned(), text("GET"));
        assert_eq!(get(&f, "path").cloned(), text("/apache_pb.gif"));
        assert_eq!(get(&f, "code").cloned(), Some(Value::Int(200)));
        assert_eq!(get(&f, "size").cloned(), Some(Value::Int(2326)));
        assert_eq!(
            get(&f, "agent").cloned(),
            text("Mozilla/4.08 [en] (Win98; I ;Nav)")
        );
        assert!(get(&f, "ident").is_none(), "`-` is left out");
        // IPv6, a quote inside the request, `-` for the size, a probe that
        // sent no request line, an empty referer.
        let f = fields(
            &Format::ApacheCombined,
            r#"2001:db8::1 - - [04/Dec/2026:10:00:00 +0000] "GET /a\"b?q=1 HTTP/1.1" 304 - "-" "curl/8.5""#,
        )
        .expect("awkward");
        assert_eq!(get(&f, "host").cloned(), text("2001:db8::1"));
        assert_eq!(get(&f, "path").cloned(), text(r#"/a\"b?q=1"#));
        assert!(get(&f, "size").is_none());
        let f = fields(
            &Format::ApacheCombined,
            r#"10.0.0.9 - - [04/Dec/2026:10:00:00 +0000] "-" 408 0 "-" "-""#,
        )
        .expect("probe");
        assert_eq!(get(&f, "request").cloned(), text("-"));
        // Common lines are not combined lines, and the other way round.
        let common = r#"127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 12"#;
        assert!(fields(&Format::ApacheCommon, common).is_some());
        assert!(fields(&Format::ApacheCombined, common).is_none());
        assert!(fields(&Format::ApacheCommon, "not an access line").is_none());
        // Invalid UTF-8 becomes U+FFFD in the fields (the envelope's message
        // would keep the bytes; a parsed line's fields are text).
        let mut bytes = br#"1.2.3.4 - - [t] "GET /caf"#.to_vec();
        bytes.push(0xe9);
        bytes.extend_from_slice(br#" HTTP/1.1" 200 1"#);
        let f = parse(&Format::ApacheCommon, &BTreeMap::new(), &bytes).expect("bytes");
        assert_eq!(get(&f, "path").cloned(), text("/caf\u{fffd}"));
    }

    #[test]
    fn syslog_rfc3164_and_rfc5424_told_apart_per_line() {
        let f = fields(
            &Format::Syslog,
            "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0",
        )
        .expect("3164");
        assert_eq!(get(&f, "time").cloned(), text("Jun 14 15:16:01"));
        assert_eq!(get(&f, "host").cloned(), text("combo"));
        assert_eq!(get(&f, "ident").cloned(), text("sshd(pam_unix)"));
        assert_eq!(get(&f, "pid").cloned(), Some(Value::Int(19939)));
        assert_eq!(
            get(&f, "message").cloned(),
            text("authentication failure; logname= uid=0")
        );
        let f = fields(
            &Format::Syslog,
            "<34>Oct  1 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
        )
        .expect("3164 with pri");
        assert_eq!(get(&f, "pri").cloned(), Some(Value::Int(34)));
        assert_eq!(get(&f, "time").cloned(), text("Oct  1 22:14:15"));
        assert_eq!(get(&f, "ident").cloned(), text("su"));
        let f = fields(
            &Format::Syslog,
            r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event"#,
        )
        .expect("5424");
        assert_eq!(get(&f, "pri").cloned(), Some(Value::Int(165)));
        assert_eq!(get(&f, "time").cloned(), text("2003-10-11T22:14:15.003Z"));
        assert_eq!(get(&f, "ident").cloned(), text("evntslog"));
        assert!(get(&f, "pid").is_none());
        assert_eq!(get(&f, "msgid").cloned(), text("ID47"));
        assert_eq!(
            get(&f, "extradata").cloned(),
            text(r#"[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]"#)
        );
        assert_eq!(get(&f, "message").cloned(), text("An application event"));
        let f = fields(&Format::Syslog, "<13>1 - - - - - -").expect("all left out");
        assert_eq!(get(&f, "message").cloned(), text(""));
        assert!(fields(&Format::Syslog, "hello world").is_none());
        assert!(fields(&Format::Syslog, "<999>Jun 14 15:16:01 h x: y").is_none());
    }

    #[test]
    fn apache_error_lines_of_2_2_and_2_4() {
        let f = fields(
            &Format::ApacheError,
            "[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok /etc/httpd/conf/workers2.properties",
        )
        .expect("2.2");
        assert_eq!(get(&f, "level").cloned(), text("notice"));
        assert_eq!(
            get(&f, "message").cloned(),
            text("workerEnv.init() ok /etc/httpd/conf/workers2.properties")
        );
        let f = fields(
            &Format::ApacheError,
            "[Thu Jun 27 11:55:44.569531 2019] [core:error] [pid 4567:tid 139] [client 10.0.0.1:5678] AH00037: Symbolic link not allowed",
        )
        .expect("2.4");
        assert_eq!(get(&f, "module").cloned(), text("core"));
        assert_eq!(get(&f, "level").cloned(), text("error"));
        assert_eq!(get(&f, "pid").cloned(), Some(Value::Int(4567)));
        assert_eq!(get(&f, "tid").cloned(), Some(Value::Int(139)));
        assert_eq!(get(&f, "client").cloned(), text("10.0.0.1:5678"));
        assert_eq!(
            get(&f, "message").cloned(),
            text("AH00037: Symbolic link not allowed")
        );
        assert!(fields(&Format::ApacheError, "no brackets").is_none());
    }

    #[test]
    fn logfmt_csv_and_regex_with_types() {
        let types: BTreeMap<String, Kind> = [
            ("took".to_string(), Kind::Int),
            ("ratio".to_string(), Kind::Float),
            ("ok".to_string(), Kind::Bool),
        ]
        .into();
        let f = parse(
            &Format::Logfmt,
            &types,
            br#"level=info msg="hello \"world\"" took=12 ratio=0.5 ok=true cached"#,
        )
        .expect("logfmt");
        assert_eq!(get(&f, "msg").cloned(), text(r#"hello "world""#));
        assert_eq!(get(&f, "took").cloned(), Some(Value::Int(12)));
        assert_eq!(get(&f, "ratio").cloned(), Some(Value::Float(0.5)));
        assert_eq!(get(&f, "ok").cloned(), Some(Value::Bool(true)));
        assert_eq!(get(&f, "cached").cloned(), Some(Value::Bool(true)));
        assert!(fields(&Format::Logfmt, "just words here").is_none());
        assert!(fields(&Format::Logfmt, "msg=\"never closed").is_none());
        // A value that is not of its type stays a string.
        let f = parse(&Format::Logfmt, &types, b"took=soon").expect("logfmt");
        assert_eq!(get(&f, "took").cloned(), text("soon"));

        let csv = Format::Csv {
            fields: vec!["a".into(), "b".into()],
            delimiter: b';',
        };
        let f = fields(&csv, r#"x;"say ""hi"";ok";extra"#).expect("csv");
        assert_eq!(get(&f, "a").cloned(), text("x"));
        assert_eq!(get(&f, "b").cloned(), text(r#"say "hi";ok"#));
        assert_eq!(get(&f, "column_3").cloned(), text("extra"));

        let re = Format::Regex(Re::new(r"^(?P<level>\w+): (?P<rest>.*)$").expect("re"));
        let f = fields(&re, "WARN: disk at 91%").expect("regex");
        assert_eq!(get(&f, "level").cloned(), text("WARN"));
        assert_eq!(get(&f, "rest").cloned(), text("disk at 91%"));
        assert!(fields(&re, "no colon").is_none());
    }

    #[test]
    fn values_write_as_json() {
        let mut out = Vec::new();
        for v in [
            Value::Str("a\"b".into()),
            Value::Int(-3),
            Value::Float(1.5),
            Value::Bool(false),
        ] {
            v.write_json(&mut out);
            out.push(b' ');
        }
        assert_eq!(String::from_utf8_lossy(&out), "\"a\\\"b\" -3 1.5 false ");
    }

    proptest::proptest! {
        /// Any access line written with Apache's combined format gives back
        /// what was written in it.
        #[test]
        fn combined_lines_give_back_their_fields(
            host in "[0-9a-f:.]{3,39}",
            user in "[a-z-]{1,12}",
            method in "[A-Z]{3,7}",
            path in "/[!-~&&[^\"\\\\]]{0,40}",
            code in 100i64..600,
            size in proptest::option::of(0i64..10_000_000),
            agent in "[ -~&&[^\"\\\\]]{0,60}",
        ) {
            let size_text = size.map_or("-".to_string(), |s| s.to_string());
            let line = format!(
                "{host} - {user} [04/Dec/2026:10:00:00 +0000] \"{method} {path} HTTP/1.1\" {code} {size_text} \"-\" \"{agent}\""
            );
            let f = fields(&Format::ApacheCombined, &line).expect("parses");
            proptest::prop_assert_eq!(get(&f, "host").cloned(), text(&host));
            proptest::prop_assert_eq!(get(&f, "user").cloned(), text(&user));
            proptest::prop_assert_eq!(get(&f, "method").cloned(), text(&method));
            proptest::prop_assert_eq!(get(&f, "path").cloned(), text(&path));
            proptest::prop_assert_eq!(get(&f, "code").cloned(), Some(Value::Int(code)));
            proptest::prop_assert_eq!(get(&f, "size").cloned(), size.map(Value::Int));
            proptest::prop_assert_eq!(get(&f, "agent").cloned(), text(&agent));
        }

        /// logfmt pairs written (quoted when they hold spaces or quotes) are
        /// read back as written.
        #[test]
        fn logfmt_pairs_give_back_their_values(
            pairs in proptest::collection::vec(("[a-z_]{1,10}", "[ -~]{0,20}"), 1..8),
        ) {
            let line: Vec<String> = pairs
                .iter()
                .map(|(k, v)| {
                    let quoted = v.replace('\\', "\\\\").replace('"', "\\\"");
                    format!("{k}=\"{quoted}\"")
                })
                .collect();
            let f = fields(&Format::Logfmt, &line.join(" ")).expect("parses");
            proptest::prop_assert_eq!(f.len(), pairs.len());
            for ((k, v), (name, value)) in pairs.iter().zip(&f) {
                proptest::prop_assert_eq!(k, name);
                proptest::prop_assert_eq!(value, &Value::Str(v.clone()));
            }
        }
    }
}
