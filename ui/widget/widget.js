/*
 * Support chat widget: one <script> tag puts a chat bubble and panel on any page.
 *
 *   <script src="https://bot.example.com/widget/widget.js"
 *           data-bot-url="https://bot.example.com" data-title="Pinecrest help"
 *           data-color="#2f6f4f" data-greeting="Hi! How can we help?"></script>
 *
 * What this file owns: the widget's DOM (inside a Shadow DOM so the host page's styles and
 * ours never mix), talking to the bot's REST API (/api/v1/chat/stream as Server-Sent Events
 * over fetch, /feedback, /handoff, /conversations/{id}) and keeping the conversation id in
 * localStorage so a reload restores the transcript. Once the conversation is with the support
 * team it follows /conversations/{id}/events (Server-Sent Events over fetch): a person's
 * messages appear as they are sent, labelled with their name; a dropped connection is resumed
 * with Last-Event-ID (the last id seen is kept in localStorage too, so a reload resumes).
 *
 * Safety rule: every piece of bot or customer text goes into the page with textContent (or
 * setAttribute on plain attributes), never as HTML. Icons are built with createElementNS.
 * Plain modern JavaScript, no build step, nothing loaded from a CDN.
 */
(function () {
  "use strict";

  var script = document.currentScript ||
    document.querySelector('script[src*="widget.js"][data-bot-url], script[src*="widget.js"]');
  if (!script) { return; }
  // A page that includes the tag twice gets one widget.
  if (window.__supportChatWidgetLoaded) { return; }
  window.__supportChatWidgetLoaded = true;

  var scriptUrl = new URL(script.src, document.baseURI);
  var config = {
    botUrl: (script.getAttribute("data-bot-url") || scriptUrl.origin).replace(/\/+$/, ""),
    title: script.getAttribute("data-title") || "Help",
    color: script.getAttribute("data-color") || "#2f6f4f",
    greeting: script.getAttribute("data-greeting") ||
      "Hi! Ask me anything about orders, shipping, returns or your account.",
    cssUrl: new URL("widget.css", scriptUrl).href,
  };
  var API = config.botUrl + "/api/v1";
  var STORAGE_KEY = "supportChat:" + config.botUrl + ":conversation";
  var EVENTS_KEY = "supportChat:" + config.botUrl + ":lastEvent";  // {c: conversation, e: id}
  var SVG_NS = "http://www.w3.org/2000/svg";

  // ---------------------------------------------------------------- small DOM helpers
  /** Create an element; `text` is always set with textContent, never parsed as HTML. */
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (name) {
        if (attrs[name] === false || attrs[name] == null) { return; }
        node.setAttribute(name, attrs[name] === true ? "" : String(attrs[name]));
      });
    }
    if (text != null) { node.textContent = String(text); }
    return node;
  }

  /** An inline SVG icon from path data (built with DOM calls, not markup). */
  function icon(paths) {
    var svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    paths.forEach(function (d) {
      var path = document.createElementNS(SVG_NS, "path");
      path.setAttribute("d", d);
      svg.appendChild(path);
    });
    return svg;
  }

  var ICONS = {
    chat: ["M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"],
    close: ["M6 6l12 12", "M18 6L6 18"],
    send: ["M3 20l18-8L3 4l2 8-2 8z", "M5 12h8"],
    up: ["M7 11v9H4v-9h3z", "M7 11l4-7a2 2 0 0 1 3 2l-1 4h5a2 2 0 0 1 2 2.3l-1.2 6A2 2 0 0 1 16.8 20H7"],
    down: ["M17 13V4h3v9h-3z", "M17 13l-4 7a2 2 0 0 1-3-2l1-4H6a2 2 0 0 1-2-2.3l1.2-6A2 2 0 0 1 7.2 4H17"],
    restart: ["M4 12a8 8 0 1 0 2.3-5.6", "M4 4v4h4"],
    person: ["M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8z", "M4 21a8 8 0 0 1 16 0"],
  };

  /** Text colour (dark or light) readable on the brand colour, from its luminance. */
  function readableOn(color) {
    var probe = el("span");
    probe.style.color = color;
    document.body.appendChild(probe);
    var rgb = getComputedStyle(probe).color.match(/\d+(\.\d+)?/g) || ["0", "0", "0"];
    probe.remove();
    var lum = [0, 1, 2].map(function (i) {
      var c = Number(rgb[i]) / 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    var l = 0.2126 * lum[0] + 0.7152 * lum[1] + 0.0722 * lum[2];
    return l > 0.4 ? "#1b1f1d" : "#ffffff";
  }

  function safeColor(value) {
    return window.CSS && CSS.supports && CSS.supports("color", value) ? value : "#2f6f4f";
  }

  function loadConversationId() {
    try { return window.localStorage.getItem(STORAGE_KEY); } catch (e) { return null; }
  }

  function saveConversationId(id) {
    try {
      if (id) { window.localStorage.setItem(STORAGE_KEY, id); }
      else { window.localStorage.removeItem(STORAGE_KEY); }
    } catch (e) { /* storage disabled (private mode): the chat still works for this page */ }
  }

  /** The last live event seen in this conversation (0: none), to resume from. */
  function loadLastEvent(conversationId) {
    try {
      var saved = JSON.parse(window.localStorage.getItem(EVENTS_KEY) || "null");
      return saved && saved.c === conversationId ? Number(saved.e) || 0 : 0;
    } catch (e) { return 0; }
  }

  function saveLastEvent(conversationId, eventId) {
    try {
      if (conversationId) {
        window.localStorage.setItem(EVENTS_KEY, JSON.stringify({ c: conversationId, e: eventId }));
      } else { window.localStorage.removeItem(EVENTS_KEY); }
    } catch (e) { /* storage disabled: resuming starts from the transcript instead */ }
  }

  /**
   * Turn a failed HTTP response into a sentence a customer can act on. `retryAfter`: the
   * seconds of a 429's Retry-After header (the API exposes it to the shop's origin through
   * CORS; without it, a minute is always enough: the chat limit is per minute).
   */
  function friendlyError(status, body, retryAfter) {
    if (status === 429) {
      var wait = retryAfter > 0 ? Math.ceil(retryAfter) + " s" : "a minute";
      return "You're sending messages too quickly. Please wait " + wait + " and try again.";
    }
    if (status === 422 && body && body.error) { return String(body.error); }
    if (status === 404) { return "This conversation is no longer available. Please start a new one."; }
    if (status === 503) { return "The assistant is not available right now. Please try again in a minute."; }
    return "Sorry, something went wrong on our side. Please try again.";
  }

  function readError(response) {
    return response.json().catch(function () { return null; }).then(function (body) {
      var retryAfter = Number(response.headers.get("Retry-After")) || 0;
      var error = new Error(friendlyError(response.status, body, retryAfter));
      error.status = response.status;
      throw error;
    });
  }

  function postJson(path, payload) {
    return fetch(API + path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(payload),
    }).then(function (response) {
      return response.ok ? response.json().catch(function () { return {}; }) : readError(response);
    });
  }

  /**
   * Read a Server-Sent Events response body, calling onEvent(name, data, id) for each event
   * (data parsed as JSON). Resolves when the stream ends.
   */
  function readEvents(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";

    function dispatch(block) {
      var name = "message";
      var id = null;
      var data = [];
      block.split(/\r\n|\r|\n/).forEach(function (line) {
        if (!line || line.charAt(0) === ":") { return; } // blank or keep-alive comment
        var colon = line.indexOf(":");
        var field = colon < 0 ? line : line.slice(0, colon);
        var value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") { name = value; }
        else if (field === "data") { data.push(value); }
        else if (field === "id") { id = value; }
      });
      if (!data.length) { return; }
      var parsed;
      try { parsed = JSON.parse(data.join("\n")); } catch (e) { parsed = { text: data.join("\n") }; }
      onEvent(name, parsed, id);
    }

    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) {
          buffer += decoder.decode();
          if (buffer.trim()) { dispatch(buffer); }
          return;
        }
        buffer += decoder.decode(chunk.value, { stream: true });
        // Events end with a blank line; sse-starlette separates lines with \r\n.
        var parts = buffer.split(/\r\n\r\n|\n\n|\r\r/);
        buffer = parts.pop();
        parts.forEach(dispatch);
        return pump();
      });
    }
    return pump();
  }

  /**
   * POST a chat message and read the Server-Sent Events reply. Calls onEvent(name, data) for
   * each event (meta, token, done, error). Resolves when the stream ends.
   */
  function streamChat(payload, onEvent) {
    return fetch(API + "/chat/stream", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "text/event-stream" },
      body: JSON.stringify(payload),
    }).then(function (response) {
      if (!response.ok) { return readError(response); }
      return readEvents(response, onEvent);
    });
  }

  /**
   * Follow a conversation's live events (agent_joined, agent_message, agent_left, resolved)
   * after event id `after`. Resolves when the server ends the stream; `signal` aborts it.
   */
  function followEvents(conversationId, after, onEvent, signal) {
    var headers = { "Accept": "text/event-stream" };
    if (after) { headers["Last-Event-ID"] = String(after); }
    return fetch(API + "/conversations/" + encodeURIComponent(conversationId) + "/events",
      { headers: headers, signal: signal })
      .then(function (response) {
        if (!response.ok) { return readError(response); }
        return readEvents(response, onEvent);
      });
  }

  // ---------------------------------------------------------------- the widget
  function Widget() {
    this.conversationId = loadConversationId();
    this.busy = false;
    this.restored = false;
    this.openingShown = false;  // the opening suggestions were asked for (empty chat)
    this.handedOff = false;  // the conversation is with the support team
    this.following = null;   // the AbortController of the live event stream, while following
    this.shownAgentMessages = {};  // message ids already on screen (a resume may repeat one)
    this.build();
  }

  Widget.prototype.build = function () {
    var self = this;
    var host = el("div", { id: "support-chat-widget", "data-support-chat": "" });
    var color = safeColor(config.color);
    host.style.setProperty("--cw-color", color);
    host.style.setProperty("--cw-on-color", readableOn(color));
    var shadow = host.attachShadow({ mode: "open" });
    this.host = host;
    this.shadow = shadow;

    // Styles load from widget.css next to this script; the widget stays hidden until they
    // arrive (or fail) so it never flashes unstyled on the host page.
    var root = el("div", { class: "cw-root" });
    root.style.visibility = "hidden";
    var link = el("link", { rel: "stylesheet", href: config.cssUrl });
    function reveal() { root.style.visibility = ""; }
    link.addEventListener("load", reveal);
    link.addEventListener("error", function () {
      reveal();
      if (window.console) { console.warn("support chat: could not load " + config.cssUrl); }
    });
    setTimeout(reveal, 4000); // a stalled stylesheet must not hide the chat for good
    shadow.appendChild(link);
    shadow.appendChild(root);

    // Launcher bubble.
    this.launcher = el("button", {
      type: "button", class: "cw-launcher", "aria-label": "Open chat: " + config.title,
      "aria-expanded": "false", "aria-controls": "cw-panel",
    });
    var chatIcon = icon(ICONS.chat);
    chatIcon.setAttribute("class", "cw-icon-open");
    var closeIcon = icon(ICONS.close);
    closeIcon.setAttribute("class", "cw-icon-close");
    this.launcher.appendChild(chatIcon);
    this.launcher.appendChild(closeIcon);
    this.launcher.addEventListener("click", function () {
      if (self.panel.hidden) { self.open(); } else { self.close(); }
    });

    // Panel.
    var panel = el("section", {
      id: "cw-panel", class: "cw-panel", role: "dialog", "aria-modal": "false",
      "aria-labelledby": "cw-title", hidden: true,
    });
    this.panel = panel;

    var header = el("header", { class: "cw-header" });
    var heading = el("div", { class: "cw-heading" });
    heading.appendChild(el("h2", { id: "cw-title", class: "cw-title" }, config.title));
    heading.appendChild(el("p", { class: "cw-subtitle" }, "Usually answers instantly"));
    var restart = el("button", {
      type: "button", class: "cw-icon-btn", "aria-label": "Start a new conversation",
      title: "Start a new conversation",
    });
    restart.appendChild(icon(ICONS.restart));
    restart.addEventListener("click", function () { self.reset(); });
    var close = el("button", {
      type: "button", class: "cw-icon-btn cw-close", "aria-label": "Close chat", title: "Close chat",
    });
    close.appendChild(icon(ICONS.close));
    close.addEventListener("click", function () { self.close(); });
    header.appendChild(heading);
    header.appendChild(restart);
    header.appendChild(close);

    // The transcript is a log; new bot answers are announced once, complete, through the
    // separate live region below (announcing every streamed token would be unbearable).
    this.log = el("div", { class: "cw-log", role: "log", "aria-live": "off", "aria-label": "Conversation", tabindex: "0" });
    this.announcer = el("div", { class: "cw-sr-only", "aria-live": "polite", "aria-atomic": "true" });
    this.status = el("p", { class: "cw-status", role: "status", "aria-live": "polite" });

    var form = el("form", { class: "cw-form", novalidate: true });
    var label = el("label", { class: "cw-sr-only", for: "cw-input" }, "Type your message");
    this.input = el("textarea", {
      id: "cw-input", class: "cw-input", rows: "1", maxlength: "4000",
      placeholder: "Ask a question…", "aria-label": "Type your message", autocomplete: "off",
    });
    this.sendButton = el("button", { type: "submit", class: "cw-send", "aria-label": "Send message" });
    this.sendButton.appendChild(icon(ICONS.send));
    form.appendChild(label);
    form.appendChild(this.input);
    form.appendChild(this.sendButton);
    form.addEventListener("submit", function (event) { event.preventDefault(); self.send(); });
    this.input.addEventListener("keydown", function (event) {
      // Enter sends; Shift+Enter adds a line; composing (IME) text is left alone.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        self.send();
      }
    });
    this.input.addEventListener("input", function () { self.autosize(); });

    var footer = el("div", { class: "cw-footer" });
    this.humanButton = el("button", { type: "button", class: "cw-human" });
    this.humanButton.appendChild(icon(ICONS.person));
    this.humanButton.appendChild(el("span", null, "Talk to a human"));
    this.humanButton.addEventListener("click", function () { self.requestHuman(); });
    footer.appendChild(this.humanButton);

    panel.appendChild(header);
    panel.appendChild(this.log);
    panel.appendChild(this.status);
    panel.appendChild(form);
    panel.appendChild(footer);
    panel.appendChild(this.announcer);
    panel.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { event.preventDefault(); self.close(); }
    });

    root.appendChild(panel);
    root.appendChild(this.launcher);
    document.body.appendChild(host);
    this.greet();
  };

  Widget.prototype.autosize = function () {
    this.input.style.height = "auto";
    this.input.style.height = Math.min(this.input.scrollHeight, 120) + "px";
  };

  Widget.prototype.open = function () {
    this.panel.hidden = false;
    this.host.setAttribute("data-open", "");
    this.launcher.setAttribute("aria-expanded", "true");
    this.launcher.setAttribute("aria-label", "Close chat: " + config.title);
    this.restore();
    this.showOpening();
    this.scrollToEnd();
    this.input.focus();
  };

  Widget.prototype.close = function () {
    this.panel.hidden = true;
    this.host.removeAttribute("data-open");
    this.launcher.setAttribute("aria-expanded", "false");
    this.launcher.setAttribute("aria-label", "Open chat: " + config.title);
    this.launcher.focus(); // focus goes back to where the customer opened the chat
  };

  Widget.prototype.scrollToEnd = function () {
    this.log.scrollTop = this.log.scrollHeight;
  };

  Widget.prototype.setStatus = function (text, isError) {
    this.status.textContent = text || "";
    this.status.classList.toggle("cw-status--error", Boolean(isError));
  };

  Widget.prototype.greet = function () {
    this.addNote(config.greeting, "cw-msg--greeting");
  };

  /** A bot-side line that is not an answer (greeting, hand-over notice): no feedback. */
  Widget.prototype.addNote = function (text, extraClass) {
    var row = el("div", { class: "cw-msg cw-msg--bot cw-msg--note " + (extraClass || "") });
    row.appendChild(el("div", { class: "cw-text" }, text));
    this.log.appendChild(row);
    this.scrollToEnd();
    return row;
  };

  /** A customer's message as a row of the log (live or restored). */
  function customerRow(text) {
    var row = el("div", { class: "cw-msg cw-msg--customer" });
    row.appendChild(el("span", { class: "cw-sr-only" }, "You said: "));
    row.appendChild(el("div", { class: "cw-text" }, text));
    return row;
  }

  Widget.prototype.addCustomer = function (text) {
    var row = customerRow(text);
    this.log.appendChild(row);
    this.scrollToEnd();
    return row;
  };

  /** An empty bot answer that fills in as tokens stream; returns its parts. */
  Widget.prototype.addAnswer = function () {
    var row = el("div", { class: "cw-msg cw-msg--bot", "aria-busy": "true" });
    var text = el("div", { class: "cw-text" });
    var typing = el("span", { class: "cw-typing", "aria-label": "Assistant is typing" });
    typing.appendChild(el("span"));
    typing.appendChild(el("span"));
    typing.appendChild(el("span"));
    text.appendChild(typing);
    row.appendChild(text);
    this.log.appendChild(row);
    this.scrollToEnd();
    return { row: row, text: text, typing: typing, content: "" };
  };

  Widget.prototype.finishAnswer = function (answer, done) {
    answer.row.removeAttribute("aria-busy");
    if (answer.typing.parentNode) { answer.typing.remove(); }
    // The final reply is authoritative (the stream may have been cut or rewritten).
    if (typeof done.reply === "string" && done.reply !== answer.content) {
      answer.content = done.reply;
      answer.text.textContent = done.reply;
    }
    if (done.route) { answer.row.setAttribute("data-route", done.route); }
    if (done.message_id) { answer.row.setAttribute("data-message-id", done.message_id); }
    if (Array.isArray(done.sources) && done.sources.length) {
      answer.row.appendChild(this.renderSources(done.sources));
    }
    if (done.route === "agent") {
      // A person has the conversation: the bot stayed silent. No answer bubble, just who has it.
      answer.row.remove();
      this.setStatus(done.reply || "");
      this.announcer.textContent = done.reply || "";
      this.showHandedOff(null);
      return;
    }
    if (done.message_id) { answer.row.appendChild(this.renderFeedback(done.message_id)); }
    if (done.handoff) {
      // The reply itself says when a person will answer; the note says where it will appear.
      this.showHandedOff("Waiting for a person from our team. Their reply will appear here.");
    } else if (done.route === "fallback" && !this.handedOff) {
      // The fallback answer offers a person; make accepting that one click.
      var self = this;
      var offer = el("button", { type: "button", class: "cw-offer" }, "Yes, connect me with a person");
      offer.addEventListener("click", function () { offer.remove(); self.requestHuman(); });
      answer.row.appendChild(offer);
    }
    this.announcer.textContent = config.title + " says: " + answer.content;
    if (!done.handoff && !this.handedOff) { this.showSuggestions(done.suggestions); }
    this.scrollToEnd();
  };

  // ---------------------------------------------------------------- suggested questions
  /**
   * Up to three questions as chips (buttons, text only) at the end of the log: a click sends
   * the question with `suggestion: {faq_id}` so the click is counted. Only the latest set is
   * shown; sending anything removes it.
   */
  Widget.prototype.showSuggestions = function (suggestions) {
    var self = this;
    this.clearSuggestions();
    if (!Array.isArray(suggestions) || !suggestions.length) { return; }
    var group = el("div", { class: "cw-suggestions", role: "group", "aria-label": "Suggested questions" });
    suggestions.slice(0, 3).forEach(function (s) {
      if (!s || typeof s.question !== "string" || !s.question) { return; }
      var chip = el("button", { type: "button", class: "cw-chip", "data-faq-id": s.faq_id }, s.question);
      chip.addEventListener("click", function () {
        if (self.busy) { return; }
        self.send({ faq_id: String(s.faq_id), question: s.question });
      });
      group.appendChild(chip);
    });
    if (group.children.length) { this.log.appendChild(group); }
  };

  Widget.prototype.clearSuggestions = function () {
    var shown = this.log.querySelectorAll(".cw-suggestions");
    for (var i = 0; i < shown.length; i++) { shown[i].remove(); }
  };

  /** On an empty chat: the most asked questions (best effort: nothing shown on a failure). */
  Widget.prototype.showOpening = function () {
    var self = this;
    if (this.conversationId || this.openingShown) { return; }
    this.openingShown = true;
    fetch(API + "/suggestions/opening", { headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) {
        // Only while the chat is still empty: a customer who typed meanwhile has moved on.
        if (body && !self.conversationId && !self.busy) {
          self.showSuggestions(body.suggestions);
          self.scrollToEnd();
        }
      })
      .catch(function () {});
  };

  Widget.prototype.renderSources = function (sources) {
    var box = el("div", { class: "cw-sources" });
    box.appendChild(el("p", { class: "cw-sources-title" }, sources.length === 1 ? "Source" : "Sources"));
    var list = el("ol", { class: "cw-sources-list" });
    sources.forEach(function (source, i) {
      var item = el("li", { class: "cw-source" });
      var title = source.title || source.record_id || "Source " + (i + 1);
      var label;
      // Only http(s) sources become links; anything else (a file name) stays plain text.
      if (typeof source.source === "string" && /^https?:\/\//i.test(source.source)) {
        label = el("a", { href: source.source, target: "_blank", rel: "noopener noreferrer" }, title);
      } else {
        label = el("span", { class: "cw-source-title" }, title);
      }
      if (source.snippet) { label.setAttribute("title", source.snippet); }
      if (source.kind) {
        item.appendChild(el("span", { class: "cw-source-kind" },
          source.kind === "faq" ? "FAQ" : source.kind === "dialogue" ? "Past chat" : source.kind));
      }
      item.appendChild(label);
      list.appendChild(item);
    });
    box.appendChild(list);
    return box;
  };

  /** Thumbs up/down for one answer; `rated` ("up"/"down") shows a rating already given. */
  Widget.prototype.renderFeedback = function (messageId, rated) {
    var self = this;
    var bar = el("div", { class: "cw-feedback", role: "group", "aria-label": "Was this answer helpful?" });
    bar.appendChild(el("span", { class: "cw-feedback-label" }, "Helpful?"));
    var thanks = el("span", { class: "cw-feedback-thanks" });
    var buttons = [["up", "Yes, this helped", ICONS.up], ["down", "No, this did not help", ICONS.down]]
      .map(function (spec) {
        var button = el("button", {
          type: "button", class: "cw-rate cw-rate--" + spec[0], "aria-label": spec[1],
          title: spec[1], "aria-pressed": "false", "data-rating": spec[0],
        });
        button.appendChild(icon(spec[2]));
        button.addEventListener("click", function () {
          buttons.forEach(function (b) { b.disabled = true; });
          postJson("/feedback", { message_id: messageId, rating: spec[0] }).then(function () {
            button.setAttribute("aria-pressed", "true");
            bar.setAttribute("data-rated", spec[0]);
            thanks.textContent = "Thanks for your feedback!";
          }, function (error) {
            buttons.forEach(function (b) { b.disabled = false; });
            self.setStatus(error.message, true);
          });
        });
        if (rated) {
          button.disabled = true;
          if (rated === spec[0]) { button.setAttribute("aria-pressed", "true"); }
        }
        bar.appendChild(button);
        return button;
      });
    if (rated) { bar.setAttribute("data-rated", rated); }
    bar.appendChild(thanks);
    return bar;
  };

  /** The conversation is with the support team: say so once (`note`, if given) and follow
   * the live events so a person's messages appear as they are sent. */
  Widget.prototype.showHandedOff = function (note) {
    this.follow();
    if (this.handedOff) { return; }
    this.handedOff = true;
    this.humanButton.disabled = true;
    this.humanButton.lastChild.textContent = "A person will reply here";
    if (note) { this.addNote(note, "cw-msg--handoff"); }
  };

  /** The bot has the conversation again (handed back or resolved). */
  Widget.prototype.backToBot = function () {
    this.unfollow();
    this.handedOff = false;
    this.humanButton.disabled = false;
    this.humanButton.lastChild.textContent = "Talk to a human";
  };

  /** A message from a person of the support team, labelled with their name (text only). */
  Widget.prototype.addAgentMessage = function (name, text, messageId) {
    if (messageId) {
      if (this.shownAgentMessages[messageId]) { return null; }
      this.shownAgentMessages[messageId] = true;
    }
    var row = el("div", { class: "cw-msg cw-msg--bot cw-msg--agent", "data-message-id": messageId || null });
    row.appendChild(el("span", { class: "cw-author" }, (name || "Support team") + " · Support team"));
    row.appendChild(el("div", { class: "cw-text" }, text));
    return row;
  };

  /** Follow /conversations/{id}/events until the bot has the conversation again. */
  Widget.prototype.follow = function () {
    var self = this;
    var id = this.conversationId;
    if (this.following || !id || !window.AbortController) { return; }
    var controller = new AbortController();
    this.following = controller;
    var delay = 1000;
    // Starting from nothing (no id seen yet, e.g. on another device), the server replays the
    // whole history first: its messages are shown (once), its joins and hand-backs are old
    // news, and the `ready` event after it says how things stand now.
    var caughtUp;

    function onEvent(name, data, eventId) {
      if (self.conversationId !== id) { return; }
      if (eventId) { saveLastEvent(id, Number(eventId)); }
      var agent = (data && data.agent) ? String(data.agent) : "Someone";
      if (name === "ready") {
        caughtUp = true;
        if (data && data.status && data.status !== "handed_off") { self.backToBot(); }
        else if (data && data.agent) {
          self.setStatus(String(data.agent) + " from our support team has this conversation.");
        }
        return;
      }
      if (!caughtUp && name !== "agent_message") { return; }
      if (name === "agent_message" && typeof data.text === "string") {
        var row = self.addAgentMessage(agent, data.text, data.message_id);
        if (row) {
          self.log.appendChild(row);
          self.scrollToEnd();
          self.setStatus("");
          self.announcer.textContent = agent + " from our support team says: " + data.text;
        }
      } else if (name === "agent_joined") {
        self.addNote(agent + " from our support team has joined the chat.", "cw-msg--joined");
        self.announcer.textContent = agent + " from our support team has joined the chat.";
      } else if (name === "agent_left" || name === "resolved") {
        self.addNote(name === "resolved"
          ? agent + " has marked this conversation resolved. Ask me anything else here."
          : agent + " has handed the chat back to me. Ask me anything here.", "cw-msg--left");
        self.backToBot();
      }
    }

    function connect() {
      if (self.following !== controller) { return; }
      var after = loadLastEvent(id);
      caughtUp = Boolean(after);
      followEvents(id, after, onEvent, controller.signal).then(function () {
        delay = 1000;  // the server ended a healthy stream: reconnect at once-ish
      }, function (error) {
        if (error && error.status === 404) { controller.abort(); }
      }).then(function () {
        if (controller.signal.aborted || self.following !== controller) { return; }
        setTimeout(connect, delay);  // resume where we left off (Last-Event-ID)
        delay = Math.min(delay * 2, 30000);
      });
    }
    connect();
  };

  Widget.prototype.unfollow = function () {
    if (this.following) { this.following.abort(); }
    this.following = null;
  };

  Widget.prototype.requestHuman = function () {
    var self = this;
    if (!this.conversationId) {
      this.setStatus("Tell us briefly what you need first, then we'll pass it on to a person.");
      this.input.focus();
      return;
    }
    this.humanButton.disabled = true;
    this.setStatus("Passing your conversation to our team…");
    postJson("/handoff", { conversation_id: this.conversationId, reason: "customer asked for a human (widget button)" })
      .then(function (body) {
        // The server says when a person will answer (support hours, anyone signed in).
        var notice = (body && body.notice) || "Your conversation is with our support team. A person will reply here.";
        self.setStatus("");
        self.showHandedOff(notice);
        self.announcer.textContent = notice;
      }, function (error) {
        self.humanButton.disabled = false;
        self.setStatus(error.message, true);
      });
  };

  Widget.prototype.send = function (suggestion) {
    var self = this;
    var message = suggestion ? suggestion.question : this.input.value.trim();
    if (!message || this.busy) { return; }
    this.busy = true;
    this.sendButton.disabled = true;
    this.setStatus("");
    this.clearSuggestions();
    if (!suggestion) {  // a chip leaves what the customer was typing alone
      this.input.value = "";
      this.autosize();
    }
    this.addCustomer(message);
    var answer = this.addAnswer();
    var finished = false;
    var payload = { message: message, channel: "widget" };
    if (this.conversationId) { payload.conversation_id = this.conversationId; }
    if (suggestion) { payload.suggestion = { faq_id: suggestion.faq_id }; }

    streamChat(payload, function (name, data) {
      if (name === "meta" && data.conversation_id) {
        self.conversationId = data.conversation_id;
        saveConversationId(data.conversation_id);
      } else if (name === "token" && typeof data.text === "string") {
        if (answer.typing.parentNode) { answer.typing.remove(); }
        answer.content += data.text;
        answer.text.textContent = answer.content;
        self.scrollToEnd();
      } else if (name === "done") {
        finished = true;
        if (data.conversation_id) {
          self.conversationId = data.conversation_id;
          saveConversationId(data.conversation_id);
        }
        self.finishAnswer(answer, data);
      } else if (name === "error") {
        // Server-side failures are logged there; customers get a sentence, not internals.
        var reason = data && data.error ? String(data.error) : "";
        throw new Error(!reason || /^internal error/i.test(reason) ? friendlyError(500) : reason);
      }
    }).then(function () {
      if (!finished) { throw new Error("The answer was interrupted. Please try again."); }
    }).catch(function (error) {
      var text = error && error.status ? error.message
        : error instanceof TypeError ? "We couldn't reach the assistant. Check your connection and try again."
        : (error && error.message) || friendlyError(500);
      answer.row.removeAttribute("aria-busy");
      answer.row.classList.add("cw-msg--error");
      answer.text.textContent = text;
      self.announcer.textContent = text;
      if (error && error.status === 404) {  // stored conversation no longer exists
        self.conversationId = null;
        saveConversationId(null);
      }
      // Give the customer their words back so nothing they typed is lost.
      if (!self.input.value) { self.input.value = message; }
    }).then(function () {
      self.busy = false;
      self.sendButton.disabled = false;
      self.input.focus();
    });
  };

  /** Load the stored conversation's transcript the first time the panel opens. */
  Widget.prototype.restore = function () {
    var self = this;
    if (this.restored || !this.conversationId) { return; }
    this.restored = true;
    var id = this.conversationId;
    fetch(API + "/conversations/" + encodeURIComponent(id), { headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 404) { saveConversationId(null); self.conversationId = null; return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (view) {
        if (!view || !Array.isArray(view.messages) || self.conversationId !== id) { return; }
        // Insert before anything typed since opening, after the greeting.
        var anchor = self.log.children[1] || null;
        view.messages.forEach(function (m) {
          var row;
          if (m.role === "customer") {
            row = customerRow(m.text);
          } else if (m.role === "agent") {  // a person from the support team
            row = self.addAgentMessage(m.agent_name, m.text, m.id);
            if (!row) { return; }  // already shown live
          } else {
            row = el("div", { class: "cw-msg cw-msg--bot" });
            row.appendChild(el("div", { class: "cw-text" }, m.text));
            if (m.route) { row.setAttribute("data-route", m.route); }
            if (m.id) {
              row.setAttribute("data-message-id", m.id);
              row.appendChild(self.renderFeedback(m.id, m.rating));
            }
          }
          self.log.insertBefore(row, anchor);
        });
        if (view.status === "handed_off") {
          self.showHandedOff("Your conversation is with our support team. A person will reply here.");
        }
        self.scrollToEnd();
      })
      .catch(function () { /* a transcript we cannot load is not worth an error message */ });
  };

  Widget.prototype.reset = function () {
    if (this.busy) { return; }
    if (this.conversationId) {
      // The customer ended this chat: record it (status closed, ended_at). Best effort: a
      // failure must not keep them from starting over, and the server reopens a closed
      // conversation if a message ever arrives for it.
      postJson("/conversations/" + encodeURIComponent(this.conversationId) + "/close", {})
        .catch(function () {});
    }
    this.conversationId = null;
    saveConversationId(null);
    saveLastEvent(null);
    this.backToBot();
    this.shownAgentMessages = {};
    while (this.log.firstChild) { this.log.removeChild(this.log.firstChild); }
    this.setStatus("");
    this.greet();
    this.openingShown = false;
    this.showOpening();
    this.input.focus();
  };

  function start() { window.supportChatWidget = new Widget(); }
  if (document.body) { start(); } else { document.addEventListener("DOMContentLoaded", start); }
})();
