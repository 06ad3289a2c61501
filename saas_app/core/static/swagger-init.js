// Starts Swagger UI on the docs page (saas_app/core/docs.py). It lives in a file of its own,
// not inline, so the page's Content-Security-Policy can allow scripts from 'self' only.
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    // No call to the public validator service: nothing leaves the API's origin.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
