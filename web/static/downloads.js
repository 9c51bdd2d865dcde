// Live rates and progress on the Downloads page, from the node's Server-Sent Events.
"use strict";

(function () {
  const table = document.getElementById("downloads");
  if (!table || !window.EventSource) return;

  function size(n) {
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = text;
    return td;
  }

  function downloadRow(d) {
    const tr = document.createElement("tr");
    tr.dataset.infohash = d.infohash;
    const name = cell(d.name, "name");
    if (d.error) {
      const err = document.createElement("span");
      err.className = "error";
      err.textContent = d.error;
      name.append(document.createElement("br"), err);
    }
    const progress = document.createElement("td");
    progress.className = "progress";
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = d.progress;
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(d.progress * 100).toFixed(1)}%`;
    progress.append(bar, " ", pct, ` of ${size(d.size)}`);
    tr.append(name, cell(d.state, "state"), progress, cell(`${size(d.download_rate)}/s`, "rate"),
      cell(String(d.peers), "peers"));
    return tr;
  }

  function seedRow(t) {
    const tr = document.createElement("tr");
    tr.dataset.infohash = t.infohash;
    tr.append(cell(t.name, "name"), cell(t.state, "state"), cell(`${size(t.upload_rate)}/s`, "rate"),
      cell(String(t.peers), "peers"), cell(size(t.uploaded), "uploaded"));
    return tr;
  }

  function fill(tbody, rows, empty) {
    tbody.replaceChildren(...rows);
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "empty-row";
      const td = cell(empty, "");
      td.colSpan = 5;
      tr.append(td);
      tbody.append(tr);
    }
  }

  const source = new EventSource(table.dataset.events);
  source.addEventListener("transfers", (event) => {
    const data = JSON.parse(event.data);
    fill(table.tBodies[0], data.downloads.map(downloadRow), "Nothing is being fetched.");
    const seeding = document.getElementById("seeding");
    if (seeding) fill(seeding.tBodies[0], data.torrents.map(seedRow), "Nothing is seeded.");
  });
})();
