// inferwatt web page: fetches /api/v1/report and /api/v1/series from this collector and
// draws the charts (inline SVG, our own code), the indicator tables, data quality and the
// factors. No library, no build step. JavaScript errors are written into #errors.
'use strict';

(function () {
  const SVG = 'http://www.w3.org/2000/svg';
  // Okabe-Ito colours (distinguishable with colour-vision deficiencies), yellow left out.
  const COLOURS = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#000000', '#999999'];
  const METRICS = [
    { key: 'energy_kwh', title: 'Energy (facility)', unit: 'kWh' },
    { key: 'emissions_kgco2e', title: 'Emissions (location-based)', unit: 'kgCO2e' },
    { key: 'water_l', title: 'Water (on-site + off-site)', unit: 'L' },
  ];
  const PERIODS = { hour: 3600, day: 86400, week: 7 * 86400 };
  const MAX_POINTS = 240;

  const $ = (id) => document.getElementById(id);

  function showError(message) {
    const box = $('errors');
    if (!box) return;
    const p = document.createElement('p');
    p.className = 'js-error';
    p.textContent = message;
    box.appendChild(p);
  }
  window.addEventListener('error', (e) => {
    showError('JavaScript error: ' + e.message + ' (' + e.filename + ':' + e.lineno + ')');
  });
  window.addEventListener('unhandledrejection', (e) => {
    showError('Unhandled promise rejection: ' + (e.reason && e.reason.stack ? e.reason.stack : e.reason));
  });
  const consoleError = console.error.bind(console);
  console.error = function (...args) {
    showError('console.error: ' + args.map(String).join(' '));
    consoleError(...args);
  };

  const params = new URLSearchParams(window.location.search);
  const token = params.get('token');

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function getJson(path) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = 'Token ' + token;
    const resp = await fetch(path, { headers: headers, cache: 'no-store' });
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    if (!resp.ok) {
      throw new HttpError(resp.status, (body && body.message) || resp.statusText);
    }
    return body;
  }

  // ---- formatting -------------------------------------------------------------------
  const sig = new Intl.NumberFormat('en-US', { maximumSignificantDigits: 4 });
  const whole = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return '—';
    if (v === 0) return '0';
    const a = Math.abs(v);
    if (a >= 1e9 || a < 1e-4) return v.toExponential(3);
    return sig.format(v);
  }
  function fmtInt(v) {
    return v === null || v === undefined ? '—' : whole.format(v);
  }
  function pct(v) {
    if (v === null || v === undefined) return '—';
    return (v === 0 ? '0' : sig.format(v * 100)) + ' %';
  }
  function utc(unixS, withDate) {
    const iso = new Date(unixS * 1000).toISOString();
    return withDate ? iso.slice(5, 10) + ' ' + iso.slice(11, 16) : iso.slice(11, 16);
  }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // A "nice" axis maximum and tick step for values up to max.
  function niceScale(max) {
    if (!(max > 0)) return { top: 1, step: 0.25 };
    const rough = max / 4;
    const mag = Math.pow(10, Math.floor(Math.log10(rough)));
    const norm = rough / mag;
    const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
    return { top: Math.ceil(max / step - 1e-9) * step, step: step };
  }

  // ---- charts -----------------------------------------------------------------------
  // One line chart of one metric: a <path class="series"> per model or site, carrying
  // data-group, data-key, data-model or data-site, data-metric, data-values, data-total.
  function lineChart(data, metric, groupName) {
    const W = 460, H = 230, L = 62, R = 12, T = 12, B = 40;
    const n = data.bucket_starts.length;
    const step = data.step_s;
    const t0 = n ? data.bucket_starts[0] : 0;
    const span = Math.max(1, n) * step;
    const xOf = (i) => L + ((i + 0.5) * step / span) * (W - L - R);
    let max = 0;
    for (const s of data.series) for (const v of s[metric.key]) max = Math.max(max, v);
    const scale = niceScale(max);
    const yOf = (v) => T + (1 - v / scale.top) * (H - T - B);

    const fig = el('figure', { class: 'chart', 'data-group': groupName, 'data-metric': metric.key });
    const caption = metric.title + ' per ' + groupName + ', ' + metric.unit + ' per ' +
      (step % 86400 === 0 ? step / 86400 + ' d' : step % 3600 === 0 ? step / 3600 + ' h' : step / 60 + ' min');
    fig.appendChild(el('figcaption', {}, caption));
    const summary = data.series
      .map((s) => s.key + ': ' + fmt(s[metric.key].reduce((a, b) => a + b, 0)) + ' ' + metric.unit)
      .join('; ');
    const root = svg('svg', {
      viewBox: '0 0 ' + W + ' ' + H, width: W, height: H, role: 'img',
      'aria-label': caption + '. Totals: ' + (summary || 'none'),
    });
    root.appendChild(svg('title', {}, caption));

    // Y axis: grid lines and labels.
    for (let v = 0; v <= scale.top + scale.step / 2; v += scale.step) {
      const y = yOf(v);
      root.appendChild(svg('line', { x1: L, x2: W - R, y1: y, y2: y, class: 'grid' }));
      root.appendChild(svg('text', { x: L - 6, y: y + 4, class: 'tick', 'text-anchor': 'end' }, fmt(v)));
    }
    root.appendChild(svg('text', { x: 12, y: T + (H - T - B) / 2, class: 'unit',
      transform: 'rotate(-90 12 ' + (T + (H - T - B) / 2) + ')', 'text-anchor': 'middle' }, metric.unit));
    // X axis: up to 6 labels, with the date when the span exceeds a day.
    const withDate = span > 86400;
    const every = Math.max(1, Math.ceil(n / 6));
    for (let i = 0; i < n; i += every) {
      root.appendChild(svg('text', { x: xOf(i), y: H - B + 16, class: 'tick', 'text-anchor': 'middle' },
        utc(data.bucket_starts[i], withDate)));
    }
    root.appendChild(svg('text', { x: (L + W - R) / 2, y: H - 6, class: 'unit', 'text-anchor': 'middle' },
      'UTC' + (n ? ', from ' + new Date(t0 * 1000).toISOString().slice(0, 16).replace('T', ' ') : '')));
    root.appendChild(svg('line', { x1: L, x2: W - R, y1: yOf(0), y2: yOf(0), class: 'axis' }));

    data.series.forEach((s, k) => {
      const values = s[metric.key];
      const colour = COLOURS[k % COLOURS.length];
      const d = values.map((v, i) => (i ? 'L' : 'M') + xOf(i).toFixed(1) + ' ' + yOf(v).toFixed(1)).join(' ');
      const attrs = {
        class: 'series', d: d, stroke: colour, fill: 'none', 'stroke-width': 2,
        'data-group': groupName, 'data-key': s.key, 'data-metric': metric.key,
        'data-values': values.join(','), 'data-total': String(values.reduce((a, b) => a + b, 0)),
      };
      attrs['data-' + groupName] = s.key;
      const path = svg('path', attrs);
      path.appendChild(svg('title', {}, s.key));
      root.appendChild(path);
      values.forEach((v, i) => {
        const dot = svg('circle', { cx: xOf(i).toFixed(1), cy: yOf(v).toFixed(1), r: n > 60 ? 1.5 : 3, fill: colour, class: 'point' });
        dot.appendChild(svg('title', {}, s.key + ', ' + new Date(data.bucket_starts[i] * 1000).toISOString().slice(0, 16).replace('T', ' ') +
          ' UTC: ' + fmt(v) + ' ' + metric.unit));
        root.appendChild(dot);
      });
    });
    fig.appendChild(root);

    const legend = el('ul', { class: 'legend', 'aria-label': 'Legend' });
    data.series.forEach((s, k) => {
      const li = el('li');
      const sw = svg('svg', { width: 14, height: 14, 'aria-hidden': 'true' });
      sw.appendChild(svg('rect', { width: 14, height: 14, fill: COLOURS[k % COLOURS.length] }));
      li.appendChild(sw);
      li.appendChild(document.createTextNode(' ' + s.key));
      legend.appendChild(li);
    });
    fig.appendChild(legend);
    return fig;
  }

  function drawCharts(container, data, groupName) {
    container.replaceChildren();
    if (!data.series.length) {
      container.appendChild(el('p', { class: 'muted empty' }, 'No energy recorded in this period.'));
      return;
    }
    for (const m of METRICS) container.appendChild(lineChart(data, m, groupName));
  }

  // ---- tables -----------------------------------------------------------------------
  const COLUMNS = [
    ['gpu_hours', 'GPU-h', (i) => i.gpu_hours],
    ['energy_kwh.facility', 'Energy, facility kWh', (i) => i.energy_kwh.facility],
    ['energy_kwh.it', 'Energy, IT kWh', (i) => i.energy_kwh.it],
    ['energy_kwh.gpu_active', 'GPU active kWh', (i) => i.energy_kwh.gpu_active],
    ['energy_kwh.gpu_idle', 'GPU idle kWh', (i) => i.energy_kwh.gpu_idle],
    ['energy_kwh.host', 'Host kWh', (i) => i.energy_kwh.host],
    ['emissions_kgco2e.location', 'Location kgCO2e', (i) => i.emissions_kgco2e.location],
    ['emissions_kgco2e.market', 'Market kgCO2e', (i) => i.emissions_kgco2e.market],
    ['emissions_kgco2e.embodied', 'Embodied kgCO2e', (i) => i.emissions_kgco2e.embodied],
    ['water_l.onsite', 'Water on-site L', (i) => i.water_l.onsite],
    ['water_l.offsite', 'Water off-site L', (i) => i.water_l.offsite],
    ['requests', 'Requests', (i) => i.requests, true],
    ['input_tokens', 'Input tokens', (i) => i.input_tokens, true],
    ['output_tokens', 'Output tokens', (i) => i.output_tokens, true],
    ['per_1k_output_tokens.energy_wh_accelerator', 'Wh / 1k tokens (accelerator)', (i) => i.per_1k_output_tokens.energy_wh_accelerator],
    ['per_1k_output_tokens.energy_wh_full', 'Wh / 1k tokens (full)', (i) => i.per_1k_output_tokens.energy_wh_full],
    ['per_1k_output_tokens.emissions_gco2e', 'gCO2e / 1k tokens', (i) => i.per_1k_output_tokens.emissions_gco2e],
    ['per_1k_output_tokens.water_ml', 'mL / 1k tokens', (i) => i.per_1k_output_tokens.water_ml],
    ['sci_gco2e_per_1k_tokens', 'SCI gCO2e / 1k tokens', (i) => i.sci_gco2e_per_1k_tokens],
  ];

  function indicatorRow(label, keyName, ind, header) {
    const tr = el('tr');
    if (keyName) tr.setAttribute('data-' + keyName, label);
    tr.appendChild(el('th', { scope: 'row' }, label));
    for (const [col, , get, isInt] of COLUMNS) {
      const v = get(ind);
      const td = el('td', { 'data-col': col, 'data-value': v === null || v === undefined ? 'null' : String(v) },
        isInt ? fmtInt(v) : fmt(v));
      if (header) td.setAttribute('headers', header);
      tr.appendChild(td);
    }
    return tr;
  }

  function indicatorTable(table, caption, keyName, keyTitle, rows, totals) {
    table.replaceChildren();
    table.appendChild(el('caption', {}, caption));
    const head = el('thead');
    const hr = el('tr');
    hr.appendChild(el('th', { scope: 'col' }, keyTitle));
    for (const [col, title] of COLUMNS) hr.appendChild(el('th', { scope: 'col', 'data-col': col }, title));
    head.appendChild(hr);
    table.appendChild(head);
    const body = el('tbody');
    for (const [label, ind] of rows) body.appendChild(indicatorRow(label, keyName, ind));
    table.appendChild(body);
    const foot = el('tfoot');
    foot.appendChild(indicatorRow('Total', null, totals));
    table.appendChild(foot);
  }

  // `numeric`: indices of right-aligned (number) columns.
  function simpleTable(table, caption, headers, rows, numeric) {
    numeric = numeric || [];
    table.replaceChildren();
    table.classList.add('simple');
    table.appendChild(el('caption', {}, caption));
    const head = el('thead');
    const hr = el('tr');
    for (const h of headers) hr.appendChild(el('th', { scope: 'col' }, h));
    head.appendChild(hr);
    table.appendChild(head);
    const body = el('tbody');
    for (const r of rows) {
      const tr = el('tr');
      r.forEach((c, i) => {
        const attrs = i === 0 ? { scope: 'row' } : numeric.includes(i) ? { class: 'num' } : {};
        tr.appendChild(el(i === 0 ? 'th' : 'td', attrs, c));
      });
      body.appendChild(tr);
    }
    table.appendChild(body);
    return table;
  }

  function drawQuality(box, dq) {
    box.replaceChildren();
    const dl = el('dl', { class: 'facts' });
    const fact = (name, value, id) => {
      dl.appendChild(el('dt', {}, name));
      dl.appendChild(el('dd', id ? { id: id } : {}, value));
    };
    fact('Coverage (measured GPU time / period × GPUs)', pct(dq.coverage), 'dq-coverage');
    fact('GPUs seen', fmtInt(dq.gpus_seen), 'dq-gpus');
    fact('Energy from the energy counter', pct(dq.energy_share_by_source.counter), 'dq-counter');
    fact('Energy from power integration', pct(dq.energy_share_by_source.integrated), 'dq-integrated');
    fact('Energy during gaps', pct(dq.energy_share_by_source.gap), 'dq-gap');
    fact('Folded points (spool overflow, coarser intervals)', fmtInt(dq.folded_points), 'dq-folded');
    box.appendChild(dl);

    if (dq.gaps.length) {
      const t = el('table', { id: 'gaps-table' });
      simpleTable(t, 'Gaps (GPU not measured)', ['Site', 'Host', 'GPU', 'From', 'To', 'kWh'],
        dq.gaps.map((g) => [g.site, g.host, g.gpu_uuid, g.from, g.to, fmt(g.energy_kwh)]), [5]);
      const wrap = el('div', { class: 'scroll' });
      wrap.appendChild(t);
      box.appendChild(wrap);
    } else {
      box.appendChild(el('p', { id: 'dq-no-gaps' }, 'No gaps in the period.'));
    }
    box.appendChild(el('h3', {}, 'Warnings'));
    if (dq.warnings.length) {
      const ul = el('ul', { id: 'dq-warnings', class: 'warnings' });
      for (const w of dq.warnings) ul.appendChild(el('li', {}, w));
      box.appendChild(ul);
    } else {
      box.appendChild(el('p', { id: 'dq-warnings' }, 'None.'));
    }
  }

  function drawReport(r) {
    indicatorTable($('models-table'), 'Indicators per model, ' + r.period.from + ' to ' + r.period.to,
      'model', 'Model', r.by_model.map((m) => [m.model, m]), r.totals);
    indicatorTable($('sites-table'), 'Indicators per site, ' + r.period.from + ' to ' + r.period.to,
      'site', 'Site', r.by_site.map((s) => [s.site + (s.country ? ' (' + s.country + ')' : ''), s]), r.totals);
    drawQuality($('quality'), r.data_quality);
    const m = r.methodology;
    $('methodology').textContent = 'Methodology ' + m.version + ', idle policy “' + m.idle_policy +
      '”. Input digest ' + r.input_digest + '. Generated ' + r.generated_at + '.';
    simpleTable($('factors-table'), 'Factors applied', ['Site', 'Factor', 'Value', 'Unit', 'Source', 'Year'],
      m.factors.map((f) => [f.site, f.name, fmt(f.value), f.unit, f.source, f.year === null ? '—' : String(f.year)]), [2, 5]);
  }

  function clearAll() {
    for (const id of ['charts-model', 'charts-site', 'models-table', 'sites-table', 'quality', 'factors-table']) {
      $(id).replaceChildren();
    }
    $('methodology').textContent = '';
  }

  // ---- loading ----------------------------------------------------------------------
  // The finest step that keeps a chart under MAX_POINTS buckets: minutes for recent
  // periods (the collector reads raw rows for them), then hours, then days.
  const STEPS = [60, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400];
  function stepFor(spanS) {
    for (const s of STEPS) if (spanS / s <= MAX_POINTS) return s;
    return Math.ceil(spanS / 86400 / MAX_POINTS) * 86400;
  }

  function query(obj) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(obj)) if (v !== undefined && v !== null) q.set(k, String(v));
    return q.toString();
  }

  let generation = 0;

  async function load() {
    const gen = ++generation;
    const choice = $('period').value;
    const status = $('status');
    status.className = 'status';
    status.textContent = 'Loading…';
    let from, to, step;
    if (choice in PERIODS) {
      to = Math.floor(Date.now() / 1000);
      from = to - PERIODS[choice];
      step = stepFor(PERIODS[choice]);
    }
    try {
      const report = await getJson('/api/v1/report?' + query({ from: from, to: to }));
      if (gen !== generation) return;
      if (step === undefined) {
        from = report.period.from;
        to = report.period.to;
        step = stepFor((Date.parse(to) - Date.parse(from)) / 1000);
      }
      const [byModel, bySite] = await Promise.all([
        getJson('/api/v1/series?' + query({ from: from, to: to, step: step, group: 'model' })),
        getJson('/api/v1/series?' + query({ from: from, to: to, step: step, group: 'site' })),
      ]);
      if (gen !== generation) return;
      drawCharts($('charts-model'), byModel, 'model');
      drawCharts($('charts-site'), bySite, 'site');
      drawReport(report);
      $('period-shown').textContent = report.period.from + ' → ' + report.period.to;
      $('link-json').setAttribute('href', '/api/v1/report?' + query({ from: from, to: to }));
      $('link-series').setAttribute('href', '/api/v1/series?' + query({ from: from, to: to, step: step }));
      status.textContent = 'Showing ' + report.period.from + ' to ' + report.period.to + '.';
      status.setAttribute('data-state', 'ok');
      document.body.removeAttribute('data-empty');
    } catch (e) {
      if (gen !== generation) return;
      clearAll();
      document.body.setAttribute('data-empty', 'true');
      status.className = 'status bad';
      if (e instanceof HttpError && e.status === 401) {
        status.setAttribute('data-state', 'unauthorized');
        status.textContent = token
          ? '401 Unauthorized: the token in this page’s ?token= was refused (' + e.message +
            '). Use a valid token of this collector.'
          : '401 Unauthorized: this collector needs a token to read reports (report_auth = "token"). ' +
            'Open this page as /?token=YOUR_TOKEN with any valid token of this collector ' +
            '(inferwatt-collector token create makes one).';
      } else if (e instanceof HttpError && e.status === 404) {
        status.setAttribute('data-state', 'no-data');
        status.textContent = 'No data: ' + e.message;
      } else if (e instanceof HttpError) {
        status.setAttribute('data-state', 'error');
        status.textContent = 'The collector answered ' + e.status + ': ' + e.message;
      } else {
        status.setAttribute('data-state', 'error');
        status.textContent = 'Cannot load the report: ' + e.message;
        showError(String(e && e.stack ? e.stack : e));
      }
    }
  }

  function start() {
    const select = $('period');
    const wanted = params.get('period');
    if (wanted && Array.from(select.options).some((o) => o.value === wanted)) select.value = wanted;
    select.addEventListener('change', () => {
      params.set('period', select.value);
      window.history.replaceState(null, '', '?' + params.toString());
      load();
    });
    $('controls').addEventListener('submit', (e) => e.preventDefault());
    load();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
