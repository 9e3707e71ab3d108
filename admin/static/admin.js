// Progressive enhancement shared by every page: confirmation before destructive posts.
document.addEventListener("submit", (event) => {
  const form = event.target;
  const message = form.getAttribute && form.getAttribute("data-confirm");
  if (message && !window.confirm(message)) event.preventDefault();
});

// Try it: show the inputs of the chosen event type only.
(() => {
  const select = document.getElementById("t-etype");
  if (!select) return;
  const show = () => {
    for (const box of document.querySelectorAll(".etype-fields")) box.hidden = box.dataset.etype !== select.value;
    const form = document.querySelector('input[name="source"][value="form"]');
    if (form) form.checked = true;
  };
  select.addEventListener("change", show);
})();
