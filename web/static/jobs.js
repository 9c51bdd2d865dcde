// A job page follows its job live, from the node's Server-Sent Events.
"use strict";

(function () {
  const section = document.getElementById("job");
  if (!section || !window.EventSource) return;
  const $ = (cls) => section.querySelector(cls);

  function show(job) {
    $(".job-state").textContent = job.state;
    $(".job-position").textContent = job.position ? `#${job.position} in the queue` : "";
    const p = job.progress || {};
    const bar = $(".job-progress");
    bar.max = p.total || 1;
    bar.value = p.step || 0;
    $(".job-step").textContent = p.step ? `step ${p.step} of ${p.total}` : (p.stage || "");
    $(".job-loss").textContent = p.loss !== undefined ? `loss ${p.loss}` : "";
    const error = $(".job-error");
    error.hidden = !job.error;
    error.textContent = job.error || "";
    const gallery = $(".job-results");
    gallery.replaceChildren();
    for (const r of job.results || []) {
      if (r.kind !== "image") continue;
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = `/images/${r.sha256}`;
      const img = document.createElement("img");
      img.src = r.url;
      img.alt = `Generated image, seed ${r.seed}`;
      a.append(img);
      li.append(a);
      gallery.append(li);
    }
  }

  const events = new EventSource(section.dataset.events);
  events.onmessage = (e) => {
    const job = JSON.parse(e.data);
    show(job);
    if (["done", "failed", "cancelled", "expired"].includes(job.state)) {
      events.close();
      const finishedHere = section.dataset.state !== job.state;
      if (finishedHere && (job.results || []).length) {
        window.location.reload(); // the publish forms (LoRA, images) are rendered server-side
      }
    }
  };
})();
