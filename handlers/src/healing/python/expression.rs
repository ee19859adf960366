//! The expressions of the subset [`super::grammar`] reads: conditional expressions down to
//! atoms, displays, comprehensions, subscripts and call arguments, each telling what it could
//! be assigned to.

use super::grammar::{Parser, Target};
use super::lexer::{Kind, is_keyword};

const COMPARISONS: [&str; 7] = ["==", "!=", "<", ">", "<=", ">=", "in"];
const BINARY: [&[&str]; 6] = [&["|"], &["^"], &["&"], &["<<", ">>"], &["+", "-"], &["*", "/", "//", "%", "@"]];

impl Parser<'_> {
    /// Whether the current token can begin an expression of the subset.
    pub(super) fn starts_expression(&self) -> bool {
        let t = self.tok();
        match t.kind {
            Kind::Number | Kind::Str => true,
            Kind::Name => {
                let w = self.text(t);
                !is_keyword(w) || matches!(w, "None" | "True" | "False" | "not" | "await")
            }
            Kind::Op => matches!(self.text(t), "(" | "[" | "{" | "-" | "+" | "~" | "..."),
            _ => false,
        }
    }

    /// Expressions separated by commas (a trailing one allowed): what they assign to, and
    /// whether there was only one, without a comma.
    pub(super) fn expression_list(&mut self) -> Option<(Target, bool)> {
        let first = self.expr()?;
        if !self.is(",") {
            return Some((first, true));
        }
        let mut all = first != Target::No;
        while self.eat(",") {
            if !self.starts_expression() {
                break;
            }
            all &= self.expr()? != Target::No;
        }
        Some((if all { Target::Many } else { Target::No }, false))
    }

    pub(super) fn exprs(&mut self) -> Option<()> {
        self.expression_list().map(|_| ())
    }

    /// The targets of a `for`: each assignable.
    pub(super) fn targets(&mut self) -> Option<()> {
        loop {
            if self.binary(0)? == Target::No {
                return None;
            }
            if !self.eat(",") || self.is("in") {
                return Some(());
            }
        }
    }

    /// A conditional expression (lambdas and `yield` are left to the full parser).
    pub(super) fn expr(&mut self) -> Option<Target> {
        let target = self.disjunction()?;
        if !self.eat("if") {
            return Some(target);
        }
        self.disjunction()?;
        self.expect("else")?;
        self.expr()?;
        Some(Target::No)
    }

    pub(super) fn disjunction(&mut self) -> Option<Target> {
        let target = self.conjunction()?;
        if !self.is("or") {
            return Some(target);
        }
        while self.eat("or") {
            self.conjunction()?;
        }
        Some(Target::No)
    }

    pub(super) fn conjunction(&mut self) -> Option<Target> {
        let target = self.inversion()?;
        if !self.is("and") {
            return Some(target);
        }
        while self.eat("and") {
            self.inversion()?;
        }
        Some(Target::No)
    }

    pub(super) fn inversion(&mut self) -> Option<Target> {
        if self.eat("not") {
            self.inversion()?;
            return Some(Target::No);
        }
        let target = self.binary(0)?;
        let mut compared = false;
        loop {
            if self.eat("not") {
                self.expect("in")?;
            } else if self.eat("is") {
                self.eat("not");
            } else if self.kind() == Kind::Op && COMPARISONS.contains(&self.text(self.tok())) || self.is("in") {
                self.bump();
            } else {
                break;
            }
            self.binary(0)?;
            compared = true;
        }
        Some(if compared { Target::No } else { target })
    }

    /// The binary operators from `|` (level 0) to `*` (level 5) binding at least as tightly
    /// as `level`, over unary ones and `**` (precedence climbing: one call per operand, not one
    /// per level).
    pub(super) fn binary(&mut self, level: usize) -> Option<Target> {
        let mut target = self.factor()?;
        while let Some(found) = self.binary_level().filter(|found| *found >= level) {
            self.bump();
            self.binary(found + 1)?;
            target = Target::No;
        }
        Some(target)
    }

    /// The level of the binary operator at the current token, if it is one.
    fn binary_level(&self) -> Option<usize> {
        if self.kind() != Kind::Op {
            return None;
        }
        let op = self.text(self.tok());
        BINARY.iter().position(|ops| ops.contains(&op))
    }

    pub(super) fn factor(&mut self) -> Option<Target> {
        if self.kind() == Kind::Op && matches!(self.text(self.tok()), "+" | "-" | "~") {
            self.bump();
            self.factor()?;
            return Some(Target::No);
        }
        let target = if self.eat("await") {
            if !self.in_async {
                return None;
            }
            self.primary()?;
            Target::No
        } else {
            self.primary()?
        };
        if self.eat("**") {
            self.factor()?;
            return Some(Target::No);
        }
        Some(target)
    }

    /// An atom with its attributes, calls and subscripts.
    pub(super) fn primary(&mut self) -> Option<Target> {
        let mut target = self.atom()?;
        loop {
            if self.eat(".") {
                self.name()?;
                target = Target::One;
            } else if self.eat("(") {
                self.arguments(true)?;
                target = Target::No;
            } else if self.eat("[") {
                self.subscript()?;
                target = Target::One;
            } else {
                return Some(target);
            }
        }
    }

    pub(super) fn atom(&mut self) -> Option<Target> {
        let t = self.tok();
        match t.kind {
            Kind::Number => self.bump(),
            Kind::Str => {
                while self.kind() == Kind::Str {
                    self.bump();
                }
            }
            Kind::Name if matches!(self.text(t), "None" | "True" | "False") => self.bump(),
            Kind::Name => {
                self.name()?;
                return Some(Target::One);
            }
            Kind::Op => {
                let open = self.text(t);
                self.bump();
                return match open {
                    "..." => Some(Target::No),
                    "(" => self.display(")"),
                    "[" => self.display("]"),
                    "{" => self.braces(),
                    _ => None,
                };
            }
            _ => return None,
        }
        Some(Target::No)
    }

    /// A parenthesized expression, a tuple, a list or a comprehension, up to `close`.
    pub(super) fn display(&mut self, close: &str) -> Option<Target> {
        if self.eat(close) {
            return Some(Target::No);
        }
        let first = self.expr()?;
        if self.is("for") {
            self.comprehension()?;
            self.expect(close)?;
            return Some(Target::No);
        }
        if close == ")" && self.eat(")") {
            return Some(first);
        }
        let mut all = first != Target::No;
        while self.eat(",") {
            if self.is(close) {
                break;
            }
            all &= self.expr()? != Target::No;
        }
        self.expect(close)?;
        Some(if all { Target::Many } else { Target::No })
    }

    /// A dict or set display or comprehension, after its `{`.
    pub(super) fn braces(&mut self) -> Option<Target> {
        if self.eat("}") {
            return Some(Target::No);
        }
        self.expr()?;
        let dict = self.eat(":");
        if dict {
            self.expr()?;
        }
        if self.is("for") {
            self.comprehension()?;
        } else {
            while self.eat(",") {
                if self.is("}") {
                    break;
                }
                self.expr()?;
                if dict {
                    self.expect(":")?;
                    self.expr()?;
                }
            }
        }
        self.expect("}")?;
        Some(Target::No)
    }

    pub(super) fn comprehension(&mut self) -> Option<()> {
        while self.eat("for") {
            self.targets()?;
            self.expect("in")?;
            self.disjunction()?;
            while self.eat("if") {
                self.disjunction()?;
            }
        }
        Some(())
    }

    pub(super) fn subscript(&mut self) -> Option<()> {
        loop {
            self.slice()?;
            if !self.eat(",") || self.is("]") {
                break;
            }
        }
        self.expect("]")
    }

    pub(super) fn slice(&mut self) -> Option<()> {
        if !self.is(":") {
            self.expr()?;
            if !self.is(":") {
                return Some(());
            }
        }
        self.bump();
        let bound_follows = |p: &Parser<'_>| !(p.is(":") || p.is("]") || p.is(","));
        if bound_follows(self) {
            self.expr()?;
        }
        if self.eat(":") && bound_follows(self) {
            self.expr()?;
        }
        Some(())
    }

    /// Call (or class) arguments up to the closing parenthesis: positional ones and `*args`
    /// first, then keywords (none twice) and `**kwargs`; a generator only as the sole one.
    pub(super) fn arguments(&mut self, generator_allowed: bool) -> Option<()> {
        let mut keywords: Vec<&str> = Vec::new();
        let (mut named, mut count) = (false, 0);
        while !self.is(")") {
            if self.eat("**") {
                self.expr()?;
                named = true;
            } else if self.eat("*") {
                if named {
                    return None;
                }
                self.expr()?;
            } else if self.kind() == Kind::Name && self.next_is("=") {
                let keyword = self.name()?;
                if keywords.contains(&keyword) {
                    return None;
                }
                keywords.push(keyword);
                self.bump();
                self.expr()?;
                named = true;
            } else {
                if named {
                    return None;
                }
                self.expr()?;
                if self.is("for") {
                    if !generator_allowed || count > 0 {
                        return None;
                    }
                    self.comprehension()?;
                    return self.expect(")");
                }
            }
            count += 1;
            if !self.eat(",") {
                break;
            }
        }
        self.expect(")")
    }
}
