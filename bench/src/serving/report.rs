//! Markdown tables: one column per server, each cell every round's figure in order
//! ("70.1 / 74.3"), so that the machine's drift between rounds shows next to the gap
//! between the servers.

/// Named figures of one server in one round, in the order they are printed.
#[derive(Debug, Default, Clone)]
pub struct Figures(Vec<(String, f64)>);

impl Figures {
    pub fn push(&mut self, name: impl Into<String>, value: f64) {
        self.0.push((name.into(), value));
    }

    fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }
}

/// Prints one table. `rounds[c][r]` holds column `c`'s figures of round `r`; the last
/// column is llama.cpp, and the ratio column divides the first column by it round by
/// round. A figure a column does not measure prints as "–".
pub fn table(title: &str, note: &str, labels: &[String], rounds: &[Vec<Figures>]) {
    println!("\n### {title}\n\n{note}\n");
    let header: Vec<&str> = labels.iter().map(String::as_str).collect();
    let first = labels.first().map_or("", String::as_str);
    let last = labels.last().map_or("", String::as_str);
    println!("| metric | {} | {first} / {last} |", header.join(" | "));
    println!("|---|{}---:|", "---:|".repeat(labels.len()));
    for name in metric_names(rounds) {
        let cells: Vec<String> = rounds.iter().map(|r| cell(r, &name)).collect();
        let ratio = match (rounds.first(), rounds.last()) {
            (Some(a), Some(b)) => ratio_cell(a, b, &name),
            _ => "–".to_owned(),
        };
        println!("| {name} | {} | {ratio} |", cells.join(" | "));
    }
}

/// Prints one table with a row per setting and a column per figure: `rounds[c][r]` holds
/// setting `c`'s figures of round `r`. For settings compared among themselves, where no
/// column is the reference.
pub fn rows(title: &str, note: &str, labels: &[String], rounds: &[Vec<Figures>]) {
    println!("\n### {title}\n\n{note}\n");
    let names = metric_names(rounds);
    println!("| setting | {} |", names.join(" | "));
    println!("|---|{}", "---:|".repeat(names.len()));
    for (label, figures) in labels.iter().zip(rounds) {
        let cells: Vec<String> = names.iter().map(|n| cell(figures, n)).collect();
        println!("| {label} | {} |", cells.join(" | "));
    }
}

/// Every figure's name, in the order the columns first report them.
fn metric_names(rounds: &[Vec<Figures>]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for figures in rounds.iter().flatten() {
        for (name, _) in &figures.0 {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

/// One column's figure over the rounds.
fn cell(rounds: &[Figures], name: &str) -> String {
    joined(rounds.iter().map(|f| f.get(name)))
}

/// The first column's figure over the last one's, round by round.
fn ratio_cell(ours: &[Figures], theirs: &[Figures], name: &str) -> String {
    joined(ours.iter().zip(theirs).map(|(a, b)| {
        let (a, b) = (a.get(name)?, b.get(name)?);
        // Two figures of 0 (no samples) have no ratio worth printing.
        (b.abs() > 1e-9).then(|| a / b)
    }))
}

/// "a / b / ...", or "–" when no round has the figure.
fn joined(values: impl Iterator<Item = Option<f64>>) -> String {
    let values: Vec<Option<f64>> = values.collect();
    if values.iter().all(Option::is_none) {
        return "–".to_owned();
    }
    values
        .iter()
        .map(|v| v.map_or("–".to_owned(), number))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Three significant digits or so: whole numbers from 100 up, then one, then two decimals.
fn number(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(pairs: &[(&str, f64)]) -> Figures {
        let mut f = Figures::default();
        for &(name, value) in pairs {
            f.push(name, value);
        }
        f
    }

    #[test]
    fn cells_hold_every_round_and_a_dash_where_nothing_was_measured() {
        let ours = [figures(&[("a", 70.14)]), figures(&[("a", 123.6)])];
        let theirs = [figures(&[("a", 7.0), ("b", 1.0)]), figures(&[("a", 0.0)])];
        assert_eq!(cell(&ours, "a"), "70.1 / 124");
        assert_eq!(cell(&ours, "b"), "–");
        assert_eq!(cell(&theirs, "b"), "1.00 / –");
        // The second round's 0 has no ratio.
        assert_eq!(ratio_cell(&ours, &theirs, "a"), "10.0 / –");
        let rounds = vec![ours.to_vec(), theirs.to_vec()];
        assert_eq!(metric_names(&rounds), ["a", "b"]);
    }
}
