// Everything from a notebook (markdown, HTML and SVG outputs) is untrusted: it may have been
// written by anyone the owner shared with. DOMPurify removes scripts, event handlers and
// javascript: URLs; on top of that, inline styles may not escape their box (no position /
// url() / expression()), and links open in a new tab without an opener.
import DOMPurify from 'dompurify'

const UNSAFE_STYLE = /position\s*:|url\s*\(|expression\s*\(|behavior\s*:|-moz-binding|@import/i

DOMPurify.addHook('uponSanitizeAttribute', (_node, data) => {
  if (data.attrName === 'style' && UNSAFE_STYLE.test(data.attrValue)) data.keepAttr = false
})

DOMPurify.addHook('uponSanitizeElement', (node, data) => {
  // <style> is only allowed inside HTML outputs, which live in a shadow root; even there it
  // may not pull in remote resources.
  if (data.tagName === 'style' && /url\s*\(|@import/i.test(node.textContent || '')) {
    node.textContent = node.textContent.replace(/@import[^;]*;?/gi, '').replace(/url\s*\([^)]*\)/gi, 'none')
  }
})

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    const href = node.getAttribute('href') || ''
    if (!href.startsWith('#')) {
      node.setAttribute('target', '_blank')
      node.setAttribute('rel', 'noopener noreferrer nofollow')
    }
  }
})

const COMMON = {
  FORBID_TAGS: ['form', 'input', 'button', 'textarea', 'select', 'option', 'iframe', 'frame',
    'frameset', 'object', 'embed', 'base', 'link', 'meta'],
  FORBID_ATTR: ['action', 'formaction', 'srcset', 'ping'],
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true
}

/** Sanitised fragment for markdown cells (rendered into the page itself: no <style>). */
export function sanitizeMarkdownHtml (html) {
  return DOMPurify.sanitize(html, {
    ...COMMON,
    FORBID_TAGS: [...COMMON.FORBID_TAGS, 'style'],
    ADD_ATTR: ['target'],
    // `attachment:` images are resolved from the cell's attachments after sanitising
    ALLOWED_URI_REGEXP: /^(?:(?:https?|mailto|tel|attachment):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i
  })
}

/** Sanitised fragment for text/html outputs (rendered inside a shadow root). */
export function sanitizeOutputHtml (html) {
  return DOMPurify.sanitize(html, { ...COMMON, ADD_ATTR: ['target'] })
}
