//! The store's tables resolved for one apply: foreign keys as links between them, and the
//! parents-first order rows are applied in, as the engine resolves them (`sqlite-ext/src/apply.rs`,
//! `Applier::new`; `schema.rs`, `topo_order`).

use crate::store::Table;

/// A foreign key between two tracked tables, resolved to the parent's key order.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    pub child: usize,
    pub parent: usize,
    /// Child columns, in the parent's primary-key order.
    pub child_cols: Vec<String>,
}

/// The tracked tables, their links, and their apply order.
pub(crate) struct Tables {
    /// Shared: each row's merge holds its table while it calls the store (a clone per row of a
    /// table's names cost more than the merge of a fresh row).
    pub list: Vec<std::rc::Rc<Table>>,
    pub links: Vec<Link>,
    /// Indexes into `list`, parents before children.
    pub order: Vec<usize>,
}

impl Tables {
    pub(crate) fn new(list: Vec<Table>) -> Tables {
        let find = |name: &str| list.iter().position(|p| p.name.eq_ignore_ascii_case(name));
        let mut links = Vec::new();
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); list.len()];
        for (ci, t) in list.iter().enumerate() {
            for fk in &t.parents {
                let Some(pi) = find(&fk.table) else {
                    continue;
                };
                parents[ci].push(pi);
                let pk = &list[pi].key;
                // A foreign key naming the parent's columns is matched to its key by name; one
                // that references other columns than the key is not a link the apply checks
                // (the engine skips it the same way).
                let child_cols: Option<Vec<String>> = if fk.parent_columns.is_empty() {
                    (fk.columns.len() == pk.len()).then(|| fk.columns.clone())
                } else {
                    pk.iter()
                        .map(|k| {
                            fk.parent_columns
                                .iter()
                                .position(|x| x == k)
                                .map(|i| fk.columns[i].clone())
                        })
                        .collect()
                };
                if let Some(child_cols) = child_cols {
                    links.push(Link {
                        child: ci,
                        parent: pi,
                        child_cols,
                    });
                }
            }
        }
        let order = topo_order(&parents);
        Tables {
            list: list.into_iter().map(std::rc::Rc::new).collect(),
            links,
            order,
        }
    }

    /// The rank of a table named `name` in apply order (unknown tables last).
    pub(crate) fn rank(&self, name: &str) -> usize {
        self.order
            .iter()
            .position(|&i| self.list[i].name == name)
            .unwrap_or(usize::MAX)
    }

    /// The table named `name` exactly, as the engine finds a batch table's target.
    pub(crate) fn find(&self, name: &str) -> Option<usize> {
        self.list.iter().position(|t| t.name == name)
    }
}

/// Parents first, in discovery order otherwise; a cycle is kept in discovery order (foreign
/// keys are checked at commit anyway).
fn topo_order(parents: &[Vec<usize>]) -> Vec<usize> {
    fn visit(i: usize, parents: &[Vec<usize>], state: &mut [u8], order: &mut Vec<usize>) {
        if state[i] != 0 {
            return;
        }
        state[i] = 1;
        for &p in &parents[i] {
            visit(p, parents, state, order);
        }
        state[i] = 2;
        order.push(i);
    }
    let mut order = Vec::new();
    let mut state = vec![0u8; parents.len()];
    for i in 0..parents.len() {
        visit(i, parents, &mut state, &mut order);
    }
    order
}
