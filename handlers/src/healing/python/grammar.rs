//! A recognizer of a plain subset of Python (statements here, expressions in
//! [`super::expression`]), for the outline of a module without building its
//! tree: the statements and expressions test files are made of. Whatever it accepts the full
//! parser accepts, with the same top-level statements and function names (the tests compare
//! the two on every edit of a corpus); whatever it is unsure of (lambdas, stars outside calls,
//! `global`, `del`, walrus, `match`, a statement that may only be a compile-time error) it
//! answers `None`, and the caller asks the full parser.

use super::TopLevel;
use super::lexer::{Kind, Token, is_keyword, tokens};
use std::collections::BTreeSet;

/// What an expression can be assigned to: nothing, one place (a name, attribute or
/// subscript), or several (a tuple or list of such).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Target {
    No,
    One,
    Many,
}

/// Where a statement is: in a function (and an async one), in a loop, and whether the
/// functions it defines count (those nested in functions and classes only, as the full
/// outline collects them).
#[derive(Clone, Copy, Default)]
struct Scope {
    in_def: bool,
    in_async: bool,
    in_loop: bool,
    collect: bool,
}

impl Scope {
    /// The body of an `if`, `with`, `try` or a loop's `else`: its functions do not count.
    fn nested(self) -> Scope {
        Scope { collect: false, ..self }
    }
}

const AUGMENTED: [&str; 13] = ["+=", "-=", "*=", "/=", "//=", "%=", "**=", ">>=", "<<=", "&=", "|=", "^=", "@="];

pub(super) struct Parser<'s> {
    src: &'s str,
    toks: Vec<Token>,
    at: usize,
    pub(super) in_async: bool,
    names: BTreeSet<String>,
}

/// The top-level statements of `source` when it is in the subset and parses, else `None`
/// (not in the subset, or not Python: the full parser tells which).
pub fn outline(source: &str) -> Option<Vec<TopLevel>> {
    let toks = tokens(source)?;
    let mut p = Parser { src: source, toks, at: 0, in_async: false, names: BTreeSet::new() };
    let top = Scope { collect: true, ..Scope::default() };
    let mut statements = Vec::new();
    while p.kind() != Kind::End {
        let start = p.tok().start as usize;
        if p.compound(top)? {
            statements.push(TopLevel { start, names: std::mem::take(&mut p.names) });
            continue;
        }
        // Statements sharing a line are each a top-level statement.
        loop {
            let start = p.tok().start as usize;
            p.simple(top)?;
            statements.push(TopLevel { start, names: BTreeSet::new() });
            if !p.eat(";") || p.kind() == Kind::Newline {
                break;
            }
        }
        p.newline()?;
    }
    Some(statements)
}

impl<'s> Parser<'s> {
    pub(super) fn tok(&self) -> Token {
        self.toks[self.at]
    }

    pub(super) fn kind(&self) -> Kind {
        self.tok().kind
    }

    pub(super) fn text(&self, t: Token) -> &'s str {
        &self.src[t.start as usize..t.end as usize]
    }

    /// Whether the current token is the operator or keyword `word`.
    pub(super) fn is(&self, word: &str) -> bool {
        let t = self.tok();
        matches!(t.kind, Kind::Op | Kind::Name) && self.text(t) == word
    }

    pub(super) fn next_is(&self, word: &str) -> bool {
        self.toks.get(self.at + 1).is_some_and(|t| t.kind == Kind::Op && self.text(*t) == word)
    }

    pub(super) fn bump(&mut self) {
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
    }

    pub(super) fn eat(&mut self, word: &str) -> bool {
        let found = self.is(word);
        if found {
            self.bump();
        }
        found
    }

    pub(super) fn expect(&mut self, word: &str) -> Option<()> {
        self.eat(word).then_some(())
    }

    fn newline(&mut self) -> Option<()> {
        (self.kind() == Kind::Newline).then(|| self.bump())
    }

    fn at_line_end(&self) -> bool {
        self.kind() == Kind::Newline || self.is(";")
    }

    /// A name that is not a keyword (nor `__debug__`, which nothing may bind).
    pub(super) fn name(&mut self) -> Option<&'s str> {
        let t = self.tok();
        let text = self.text(t);
        let plain = t.kind == Kind::Name && !is_keyword(text) && text != "__debug__";
        plain.then(|| {
            self.bump();
            text
        })
    }

    fn dotted(&mut self) -> Option<()> {
        self.name()?;
        while self.eat(".") {
            self.name()?;
        }
        Some(())
    }

    fn statement(&mut self, scope: Scope) -> Option<()> {
        if self.compound(scope)? {
            return Some(());
        }
        self.simple_line(scope)
    }

    fn simple_line(&mut self, scope: Scope) -> Option<()> {
        loop {
            self.simple(scope)?;
            if !self.eat(";") || self.kind() == Kind::Newline {
                break;
            }
        }
        self.newline()
    }

    /// The body after a header's colon: statements on the same line, or an indented block.
    fn block(&mut self, scope: Scope) -> Option<()> {
        if self.kind() != Kind::Newline {
            return self.simple_line(scope);
        }
        self.bump();
        (self.kind() == Kind::Indent).then(|| self.bump())?;
        while self.kind() != Kind::Dedent {
            if self.kind() == Kind::End {
                return None;
            }
            self.statement(scope)?;
        }
        self.bump();
        Some(())
    }

    fn colon_block(&mut self, scope: Scope) -> Option<()> {
        self.expect(":")?;
        self.block(scope)
    }

    /// A compound statement: `Some(false)` when the current token starts none.
    fn compound(&mut self, scope: Scope) -> Option<bool> {
        let t = self.tok();
        if t.kind == Kind::Op && self.text(t) == "@" {
            while self.eat("@") {
                self.expr()?;
                self.newline()?;
            }
            self.definition(scope)?;
            return Some(true);
        }
        if t.kind != Kind::Name {
            return Some(false);
        }
        match self.text(t) {
            "def" | "async" | "class" => self.definition(scope)?,
            "if" => {
                self.bump();
                self.expr()?;
                self.colon_block(scope.nested())?;
                while self.eat("elif") {
                    self.expr()?;
                    self.colon_block(scope.nested())?;
                }
                if self.eat("else") {
                    self.colon_block(scope.nested())?;
                }
            }
            "while" | "for" => {
                self.bump();
                if self.text(t) == "for" {
                    self.targets()?;
                    self.expect("in")?;
                    self.exprs()?;
                } else {
                    self.expr()?;
                }
                self.colon_block(Scope { in_loop: true, ..scope.nested() })?;
                if self.eat("else") {
                    self.colon_block(scope.nested())?;
                }
            }
            "with" => {
                self.bump();
                loop {
                    self.expr()?;
                    if self.eat("as") && self.binary(0)? == Target::No {
                        return None;
                    }
                    if !self.eat(",") {
                        break;
                    }
                }
                self.colon_block(scope.nested())?;
            }
            "try" => self.try_statement(scope.nested())?,
            // Soft keywords that may open a statement: the full parser tells.
            "match" | "case" | "type" => return None,
            _ => return Some(false),
        }
        Some(true)
    }

    fn try_statement(&mut self, scope: Scope) -> Option<()> {
        self.bump();
        self.colon_block(scope)?;
        let (mut handlers, mut bare) = (0, false);
        while self.eat("except") {
            if bare || self.is("*") {
                return None;
            }
            if self.is(":") {
                bare = true;
            } else {
                self.expr()?;
                if self.eat("as") {
                    self.name()?;
                }
            }
            self.colon_block(scope)?;
            handlers += 1;
        }
        if handlers > 0 && self.eat("else") {
            self.colon_block(scope)?;
        }
        if self.eat("finally") {
            self.colon_block(scope)?;
        } else if handlers == 0 {
            return None;
        }
        Some(())
    }

    /// `def`, `async def` or `class`, after any decorators.
    fn definition(&mut self, scope: Scope) -> Option<()> {
        let saved = self.in_async;
        if self.eat("class") {
            self.name()?;
            if self.eat("(") {
                self.arguments(false)?;
            }
            self.in_async = false;
            self.colon_block(Scope { collect: scope.collect, ..Scope::default() })?;
        } else {
            let is_async = self.eat("async");
            self.expect("def")?;
            let name = self.name()?;
            if scope.collect {
                self.names.insert(name.to_string());
            }
            self.expect("(")?;
            self.parameters()?;
            if self.eat("->") {
                self.expr()?;
            }
            self.in_async = is_async;
            let body = Scope { in_def: true, in_async: is_async, in_loop: false, collect: scope.collect };
            self.colon_block(body)?;
        }
        self.in_async = saved;
        Some(())
    }

    /// Parameters up to the closing parenthesis: plain ones (defaults last), `*args`,
    /// `**kwargs`, annotated or not, no name twice.
    fn parameters(&mut self) -> Option<()> {
        let mut seen: Vec<&str> = Vec::new();
        let (mut default, mut star, mut kwargs) = (false, false, false);
        while !self.is(")") {
            if kwargs {
                return None;
            }
            let plain = if self.eat("**") {
                kwargs = true;
                false
            } else if self.eat("*") {
                if star {
                    return None;
                }
                star = true;
                false
            } else {
                true
            };
            let name = self.name()?;
            if seen.contains(&name) {
                return None;
            }
            seen.push(name);
            if self.eat(":") {
                self.expr()?;
            }
            if plain {
                if self.eat("=") {
                    self.expr()?;
                    default = true;
                } else if default {
                    return None;
                }
            }
            if !self.eat(",") {
                break;
            }
        }
        self.expect(")")
    }

    fn simple(&mut self, scope: Scope) -> Option<()> {
        let t = self.tok();
        let word = if t.kind == Kind::Name { self.text(t) } else { "" };
        match word {
            "pass" => self.bump(),
            "break" | "continue" if scope.in_loop => self.bump(),
            "return" if scope.in_def => {
                self.bump();
                if !self.at_line_end() {
                    self.exprs()?;
                }
            }
            // A generator's `yield` (an async one's may clash with a `return` value).
            "yield" if scope.in_def && !scope.in_async => {
                self.bump();
                if !self.at_line_end() {
                    self.exprs()?;
                }
            }
            "raise" => {
                self.bump();
                if !self.at_line_end() {
                    self.expr()?;
                    if self.eat("from") {
                        self.expr()?;
                    }
                }
            }
            "assert" => {
                self.bump();
                self.expr()?;
                if self.eat(",") {
                    self.expr()?;
                }
            }
            "import" => {
                self.bump();
                loop {
                    self.dotted()?;
                    if self.eat("as") {
                        self.name()?;
                    }
                    if !self.eat(",") {
                        break;
                    }
                }
            }
            "from" => self.import_from()?,
            "None" | "True" | "False" | "not" | "await" => self.expression_statement()?,
            _ if is_keyword(word) => return None,
            _ => self.expression_statement()?,
        }
        Some(())
    }

    fn import_from(&mut self) -> Option<()> {
        self.bump();
        let mut relative = false;
        while self.eat(".") || self.eat("...") {
            relative = true;
        }
        if !self.is("import") {
            self.dotted()?;
        } else if !relative {
            return None;
        }
        self.expect("import")?;
        let parenthesized = self.eat("(");
        loop {
            self.name()?;
            if self.eat("as") {
                self.name()?;
            }
            if !self.eat(",") || (parenthesized && self.is(")")) {
                break;
            }
        }
        if parenthesized {
            self.expect(")")?;
        }
        Some(())
    }

    /// An expression statement, an assignment (chained), an augmented or an annotated one.
    fn expression_statement(&mut self) -> Option<()> {
        let opens_parenthesis = self.is("(");
        let (target, single) = self.expression_list()?;
        if self.is("=") {
            let mut left = target;
            while self.eat("=") {
                if left == Target::No {
                    return None;
                }
                left = self.expression_list()?.0;
            }
        } else if self.kind() == Kind::Op && AUGMENTED.contains(&self.text(self.tok())) {
            if target != Target::One || !single {
                return None;
            }
            self.bump();
            self.exprs()?;
        } else if self.eat(":") {
            if target != Target::One || !single || opens_parenthesis {
                return None;
            }
            self.expr()?;
            if self.eat("=") {
                self.exprs()?;
            }
        }
        Some(())
    }
}
