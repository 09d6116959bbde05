// Drives Debian's firefox-esr (WebDriver BiDi, through puppeteer-core; nothing is downloaded)
// against the notebook editor page. Run by tests/browser/test_firefox.py.
//
// Usage: node firefox_editor.mjs '<json>' with
//   {url, cookie: "sessionid=…", type: text to type at the end of cell 0,
//    expect: text another client will add to cell 0, screenshot: path, executablePath}
// Prints one line `READY <json>` once the page is synced and the text is typed, then a final
// line `RESULT <json>` (versions, timings, final cell source). Exits 1 with `FAILED <message>`.
import puppeteer from 'puppeteer-core'

const cfg = JSON.parse(process.argv[2])
const t0 = Date.now()
const since = () => Date.now() - t0
const timings = {}
let browser = null
let step = 'launching firefox'

const fail = async (message) => {
  console.log(`FAILED ${JSON.stringify({ step, message: String(message), timings })}`)
  try { await browser?.close() } catch {}
  process.exit(1)
}
setTimeout(() => fail(`timed out after ${cfg.timeoutMs ?? 90000} ms`), cfg.timeoutMs ?? 90000).unref()

try {
  browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: cfg.executablePath ?? '/usr/bin/firefox-esr',
    headless: true,
    defaultViewport: { width: 1280, height: 860 },
    extraPrefsFirefox: { 'browser.shell.checkDefaultBrowser': false, 'datareporting.policy.dataSubmissionEnabled': false }
  })
  timings.launched = since()
  const version = await browser.version()

  step = 'setting the session cookie'
  const [name, value] = [cfg.cookie.slice(0, cfg.cookie.indexOf('=')), cfg.cookie.slice(cfg.cookie.indexOf('=') + 1)]
  const host = new URL(cfg.url).hostname
  await browser.setCookie({ name, value, domain: host, path: '/', httpOnly: true, sameSite: 'Lax' })
  const page = await browser.newPage()
  const errors = []
  page.on('pageerror', (err) => errors.push(String(err?.message ?? err)))
  page.setDefaultTimeout(60000)

  step = 'opening the notebook page'
  await page.goto(cfg.url, { waitUntil: 'domcontentloaded' })
  await page.waitForFunction(() => Boolean(window.__editor?.provider?.synced), { polling: 100 })
  timings.synced = since()

  step = 'typing into the first cell'
  const editor = '[data-testid="cell"]:first-child .cm-content'
  await page.waitForSelector(editor)
  await page.click(editor)
  await page.keyboard.down('Control')
  await page.keyboard.press('End')
  await page.keyboard.up('Control')
  await page.keyboard.type(cfg.type, { delay: 10 })
  await page.waitForFunction(
    (text) => window.__editor.ydoc.getArray('cells').get(0).get('source').toString().includes(text),
    { polling: 100 }, cfg.type)
  timings.typed = since()
  console.log(`READY ${JSON.stringify({ version, timings })}`)

  step = "waiting for the other client's edit"
  await page.waitForFunction((text) => {
    const ydocHas = window.__editor.ydoc.getArray('cells').get(0).get('source').toString().includes(text)
    const shown = document.querySelector('[data-testid="cell"]:first-child .cm-content')?.textContent ?? ''
    return ydocHas && shown.includes(text)
  }, { polling: 100 }, cfg.expect)
  timings.received = since()
  await page.waitForSelector('[data-testid="saved"][data-state="saved"]')

  step = 'taking a screenshot'
  if (cfg.screenshot) await page.screenshot({ path: cfg.screenshot })
  const result = await page.evaluate(() => ({
    source: window.__editor.ydoc.getArray('cells').get(0).get('source').toString(),
    shown: document.querySelector('[data-testid="cell"]:first-child .cm-content').textContent,
    cells: document.querySelectorAll('[data-testid="cell"]').length,
    status: document.querySelector('[data-testid="status"]').dataset.state,
    saved: document.querySelector('[data-testid="saved"]').textContent,
    userAgent: navigator.userAgent
  }))
  console.log(`RESULT ${JSON.stringify({ version, timings, errors, ...result })}`)
  await browser.close()
  process.exit(0)
} catch (err) {
  await fail(err?.stack ?? err)
}
