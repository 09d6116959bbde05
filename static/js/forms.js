// Form behaviour of the server-rendered pages, without inline handlers (the
// Content-Security-Policy allows scripts from this site's files only):
// data-autosubmit submits the field's form on change, data-confirm asks before a form is sent,
// data-copy-previous copies the previous element's text; logging out forgets copied cells.
document.addEventListener("change", (event) => {
  const field = event.target.closest("[data-autosubmit]");
  if (field && field.form) field.form.submit();
});
document.addEventListener("submit", (event) => {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
  else if (new URL(event.target.action, location.href).pathname === "/accounts/logout/") forgetCopiedCells();
});

// Logging out forgets the cells copied in the editor (a shared computer's next user must not
// paste them). Unsaved edits stay, kept for their own person only (static/src/offline.js).
function forgetCopiedCells() {
  try {
    for (const key of Object.keys(localStorage)) {
      if (key.startsWith("nb-cell-clipboard")) localStorage.removeItem(key);
    }
  } catch (error) {
    // storage denied: nothing was kept
  }
}
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy-previous]");
  if (button) navigator.clipboard.writeText(button.previousElementSibling.textContent);
});
