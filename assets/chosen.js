// Outline the gallery thumbnails whose caption starts with a check mark (the chosen images).
() => {
  const mark = () => {
    document.querySelectorAll(".sg-pick .thumbnail-item").forEach((item) => {
      const caption = item.querySelector(".caption-label, figcaption, span");
      const chosen = !!caption && caption.textContent.trim().startsWith("\u2713");
      item.classList.toggle("sg-chosen", chosen);
    });
  };
  new MutationObserver(mark).observe(document.body, { childList: true, subtree: true, characterData: true });
  mark();
}
