// Tells the server this browser's time zone (a cookie), so pages show times as the viewer lives them.
(function () {
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone
    if (zone && document.cookie.indexOf('tz=' + encodeURIComponent(zone)) === -1) {
      document.cookie = 'tz=' + encodeURIComponent(zone) + '; path=/; max-age=31536000; samesite=lax'
    }
  } catch (e) { /* an old browser: times stay in UTC */ }
})()
