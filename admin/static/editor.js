// Rule editor: type-aware operator and value inputs, and the source kept in sync.
// Without this script the editor still works: "Check and update source" re-renders.
(() => {
  const form = document.getElementById("rule-form");
  if (!form) return;
  const catalog = JSON.parse(form.dataset.catalog);
  const source = document.getElementById("source");
  // the source as the form last wrote it: the server tells a typed edit from it on save
  const sourceBase = form.querySelector("input[name=source_base]");
  function showSource(text) { source.value = text; if (sourceBase) sourceBase.value = text; }
  const status = document.querySelector(".sync-status");
  let sourceEdited = false;
  let timer = null;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function idOf(path) { return "f-" + path.replace(/[^A-Za-z0-9_]+/g, "-").replace(/^-|-$/g, ""); }

  function fieldSpec(path) { return catalog.fields[path] || { type: "string", choices: [] }; }

  function refreshOperators(row) {
    const fieldSel = row.querySelector(".cond-field");
    const opSel = row.querySelector(".cond-op");
    const spec = fieldSpec(fieldSel.value);
    const current = opSel.value;
    opSel.textContent = "";
    let keep = false;
    for (const [op, info] of Object.entries(catalog.operators)) {
      if (!info.types.includes(spec.type)) continue;
      const option = el("option", { value: op }, info.label);
      if (op === current) { option.selected = true; keep = true; }
      opSel.appendChild(option);
    }
    if (!keep && opSel.options.length) opSel.options[0].selected = true;
  }

  function refreshValue(row) {
    const path = row.dataset.path;
    const spec = fieldSpec(row.querySelector(".cond-field").value);
    const op = catalog.operators[row.querySelector(".cond-op").value];
    const kind = op ? op.kind : "same";
    const cell = row.querySelector(".value-cell");
    const old = cell.querySelector(".cond-value");
    const oldValue = old ? old.value : "";
    cell.textContent = "";
    const label = (forId, text) => el("label", { class: "sr-only", for: forId }, text);
    if (kind === "none") {
      cell.appendChild(el("span", { class: "muted" }, "no value needed"));
    } else if (kind === "range") {
      for (const [i, word] of [[0, "from"], [1, "to"]]) {
        const name = `${path}.value[${i}]`;
        cell.appendChild(label(idOf(name), word));
        cell.appendChild(el("input", { type: "number", step: "any", class: "cond-value",
          id: idOf(name), name, placeholder: word }));
        if (i === 0) cell.appendChild(el("span", {}, "and"));
      }
    } else {
      const name = `${path}.value`;
      cell.appendChild(label(idOf(name), "Value"));
      let input;
      if (kind === "same" && (spec.type === "boolean" || spec.choices.length)) {
        input = el("select", { class: "cond-value", id: idOf(name), name });
        for (const v of spec.type === "boolean" ? ["true", "false"] : spec.choices) {
          const option = el("option", { value: v }, v);
          if (v === oldValue) option.selected = true;
          input.appendChild(option);
        }
      } else {
        const numeric = kind === "same" && spec.type === "number";
        input = el("input", { type: numeric ? "number" : "text", class: "cond-value",
          id: idOf(name), name });
        if (numeric) input.setAttribute("step", "any");
        if (kind === "list") input.setAttribute("placeholder", "values, comma-separated");
        if (!numeric || !isNaN(Number(oldValue))) input.value = oldValue;
      }
      cell.appendChild(input);
    }
  }

  // A search box above each field picker: typing narrows its ~90 fields (by label or
  // path) to the matches; without the script the grouped picker works as it is.
  function addFieldSearch(select) {
    if (select.dataset.search) return;
    select.dataset.search = "1";
    const box = el("input", { type: "search", class: "field-search", placeholder: "Find a field…",
                              "aria-label": "Find a field" });
    select.parentNode.insertBefore(box, select);
    box.addEventListener("input", () => {
      const words = box.value.toLowerCase().split(/\s+/).filter(Boolean);
      let first = null;
      for (const group of select.querySelectorAll("optgroup")) {
        let shown = 0;
        for (const option of group.querySelectorAll("option")) {
          const text = (option.textContent + " " + option.value + " " + group.label).toLowerCase();
          const hit = words.every((w) => text.includes(w));
          option.hidden = !hit;
          if (hit) { shown += 1; if (!first) first = option; }
        }
        group.hidden = shown === 0;
      }
      const current = select.selectedOptions[0];
      if (first && (!current || current.hidden)) {
        select.value = first.value;
        select.dispatchEvent(new Event("change", { bubbles: true }));
      }
    });
    box.addEventListener("keydown", (event) => { if (event.key === "Enter") event.preventDefault(); });
  }
  for (const select of form.querySelectorAll(".cond-field")) addFieldSearch(select);

  // A family picked in the field picker ("Count of <type> … in the last <window>") shows
  // the inputs of its parts; the name box only for a named product, category or page.
  function refreshParts(row) {
    const box = row.querySelector(".field-parts");
    if (!box) return;
    const family = (catalog.families || {})[row.querySelector(".cond-field").value];
    box.hidden = !family;
    const scope = box.querySelector(".part-scope");
    for (const part of box.querySelectorAll("[data-part]")) {
      let on = !!family && family.parts.includes(part.dataset.part);
      if (on && part.dataset.part === "name" && family.parts.includes("scope")) {
        on = !scope.value.startsWith("this_");
      }
      part.hidden = !on;
    }
    if (family) box.querySelector("[data-part=name] label").textContent = family.name_label;
  }

  form.addEventListener("change", (event) => {
    const target = event.target;
    const row = target.closest(".cond-row");
    if (row && target.classList.contains("cond-field")) {
      refreshOperators(row); refreshValue(row); refreshParts(row);
    } else if (row && target.classList.contains("part-scope")) refreshParts(row);
    else if (row && target.classList.contains("cond-op")) refreshValue(row);
    if (target.classList.contains("action-kind")) {
      const box = target.closest(".action");
      for (const params of box.querySelectorAll(".action-params")) {
        const on = params.dataset.kind === target.value;
        params.hidden = !on;
        for (const input of params.querySelectorAll("input, select")) input.disabled = !on;
      }
    }
    if (target === source) return;
    if (target.id === "format") { sourceEdited = false; }
    scheduleSync();
  });
  form.addEventListener("input", (event) => {
    if (event.target === source) {
      sourceEdited = true;
      status.textContent = "Source edited: apply it to the form";
      return;
    }
    if (event.target.classList.contains("field-search")) return;
    scheduleSync();
  });

  // + Condition, + Group, + None of these (NOT), Remove, + Action: fetch the restructured form from the server and
  // swap it in place, focus on what was added. (Without this script the same buttons
  // submit the form and the page comes back restructured.)
  const STRUCTURAL = /^(add_condition|add_group|add_not|remove|add_action|remove_action)(:|$)/;
  form.addEventListener("click", async (event) => {
    const button = event.target.closest("button[name=action]");
    if (!button || !STRUCTURAL.test(button.value)) return;
    event.preventDefault();
    const data = new FormData(form);
    data.set("action", button.value);
    let response;
    try {
      response = await fetch(window.location.href, { method: "POST", body: data,
        credentials: "same-origin" });
    } catch (err) { response = null; }
    if (!response || !response.ok) { form.requestSubmit(button); return; }
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.querySelector(".editor-form");
    if (!fresh) { form.requestSubmit(button); return; }
    form.querySelector(".editor-form").replaceWith(document.importNode(fresh, true));
    for (const select of form.querySelectorAll(".cond-field")) addFieldSearch(select);
    if (!sourceEdited) showSource(page.getElementById("source").value);
    const [verb, target] = button.value.split(":");
    let focus = null;
    if (verb === "add_condition" || verb === "add_group" || verb === "add_not") {
      const group = document.getElementById(idOf(target));
      const kids = group ? group.querySelectorAll(":scope > .cond-row, :scope > fieldset") : [];
      if (kids.length) focus = kids[kids.length - 1].querySelector(verb === "add_not" ? ".cond-field" : "select");
    } else if (verb === "add_action") {
      const actions = form.querySelectorAll("fieldset.action");
      if (actions.length) focus = actions[actions.length - 1].querySelector("select");
    } else if (verb === "remove") {
      const parent = target.replace(/(\.not)+$/, "").replace(/\.(all|any)\[\d+\]$/, "");
      const group = document.getElementById(idOf(parent));
      focus = group ? group.querySelector(".group-actions button") : null;
    }
    if (focus) focus.focus();
  });

  function scheduleSync() {
    if (sourceEdited) return;
    clearTimeout(timer);
    timer = setTimeout(sync, 250);
  }

  async function sync() {
    const data = new FormData(form);
    data.delete("source");
    try {
      const response = await fetch(form.dataset.sourceUrl, { method: "POST", body: data,
        headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" });
      if (!response.ok) { status.textContent = "Source not updated (" + response.status + ")"; return; }
      const body = await response.json();
      if (!sourceEdited) { showSource(body.source); status.textContent = "In sync with the form"; }
    } catch (err) {
      status.textContent = "Source not updated: " + err;
    }
  }
})();
