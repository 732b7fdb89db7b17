"""German case text for `engine.routing.case_sim`: the same tables as `engine.routing.phrases.en`.

Written as German customers and colleagues write, English trade words included (RAID, SLA,
RMA), so the text model meets mixed vocabulary. Paraphrase order matters as in `en`.
"""

SUBJECT = {
    "hardware_config": (
        "Individuelle Konfiguration für Auftrag {order}",
        "RAID {raid} Einrichtung für {product} benötigt",
        "Konfiguration nach Kundenwunsch: {qty}x {sku}",
        "Vorkonfiguration der {product} vor Versand",
        "Spezielle CPU- und Speicherausstattung ({ram} GB) für {sku}",
    ),
    "installation": (
        "Installation vor Ort für Auftrag {order}",
        "Techniker in {site} für {product} benötigt",
        "Rackmontage und Einrichtung in unserem Büro {site}",
        "Installationstermin für {qty} Geräte",
        "Kann jemand die {product} bei uns aufbauen?",
    ),
    "payment_terms": (
        "Zahlungsbedingungen für Auftrag {order}",
        "Anfrage Zahlungsziel {days} Tage",
        "Rechnung statt Vorkasse über {amount}",
        "Ratenzahlung für unseren Kauf von {qty}x {sku}",
        "Frage zu Bestellnummer und Rechnung, Auftrag {order}",
    ),
    "service_agreement": (
        "Servicevertrag für {product}",
        "SLA mit {hours} Std. Reaktionszeit für Auftrag {order}",
        "Garantieverlängerung auf {years} Jahre",
        "Wartungsvertrag für {qty} Geräte",
        "Supportoptionen für {sku}",
    ),
    "volume_discount": (
        "Mengenrabatt für {qty}x {sku}",
        "Anfrage Staffelpreise, Auftrag {order}",
        "Angebot für eine Großbestellung {product}",
        "Besserer Stückpreis bei Abnahme von {qty}?",
        "Rahmenvertrag und Staffelpreise",
    ),
    "delivery_exception": (
        "Lieferproblem bei Auftrag {order}",
        "Sendung {tracking} verspätet",
        "Paket beschädigt angekommen",
        "Falsche Lieferadresse bei {order}",
        "Nur Teillieferung zu Auftrag {order} erhalten",
    ),
    "returns_rma": (
        "Rücksendung für {sku}",
        "RMA für defekte {product}",
        "Gerät bei Ankunft defekt, Auftrag {order}",
        "Erstattung oder Austausch für {qty}x {sku}",
        "Wie schicke ich die {product} zurück?",
    ),
    "fraud_review": (
        "Auftrag {order} zur Prüfung angehalten",
        "Risikoprüfung: Rechnungs- und Lieferadresse abweichend",
        "Identität des Kunden prüfen für {order}",
        "Verdächtige Bestellung von {qty}x {sku}",
        "Warum ist meine Bestellung {order} gesperrt?",
    ),
}

GENERIC_SUBJECT = (
    "Frage zu Auftrag {order}",
    "AW: Ihr Angebot",
    "Auftrag {order}",
    "Anfrage",
    "Nachfrage",
)

CORE = {
    "hardware_config": (
        (
            "die Server sollen vor dem Versand mit RAID {raid} konfiguriert werden",
            "bitte richten Sie vor der Auslieferung RAID {raid} auf allen Platten ein",
            "können Sie das Plattensystem als RAID {raid} vorkonfigurieren",
            "der Speicher muss mit einem fertigen RAID {raid} Verbund kommen",
        ),
        (
            "jedes Gerät soll {ram} GB Arbeitsspeicher und zwei CPUs haben",
            "wir brauchen {ram} GB RAM pro Knoten und die schnellere Prozessoroption",
            "bitte {ram} GB Speicher statt der Standardausstattung einbauen",
            "die Ausstattung muss auf {ram} GB Speicher erweitert werden",
        ),
        (
            "bitte auch unser OS-Image installieren und das BIOS auf UEFI stellen",
            "BIOS-Einstellungen und Firmware müssen unserem Standard entsprechen",
            "bitte spielen Sie bei der Montage unser Betriebssystem-Image auf",
            "wir schicken ein Konfigurationsblatt mit Hostnamen und iDRAC-Einstellungen",
        ),
    ),
    "installation": (
        (
            "wir brauchen einen Techniker für die Installation an unserem Standort {site}",
            "bitte schicken Sie einen Monteur für die Installation vor Ort nach {site}",
            "können Sie die Installation in unserem Rechenzentrum {site} übernehmen",
            "Ihr Team soll bei uns in {site} alles aufbauen und einrichten",
        ),
        (
            "dazu gehören Rackmontage, Verkabelung und ein erster Funktionstest",
            "der Auftrag umfasst den Einbau ins Rack und den Netzwerkanschluss",
            "Einbau, Verkabelung und Inbetriebnahme sollen enthalten sein",
            "der Techniker soll die Geräte montieren und die Ersteinrichtung machen",
        ),
        (
            "der Standort ist ab {date} zugänglich, bitte schlagen Sie einen Termin vor",
            "unser Facility-Team braucht den Namen des Technikers für den Zutritt",
            "welche Installationstermine sind in der Woche vom {date} frei",
            "bitte bestätigen Sie den Termin, damit wir die Laderampe reservieren können",
        ),
    ),
    "payment_terms": (
        (
            "wir möchten mit Zahlungsziel {days} Tage statt Vorkasse bezahlen",
            "unsere Buchhaltung verlangt ein Zahlungsziel von {days} Tagen",
            "können wir {days} Tage Zeit für die Zahlung der Rechnung bekommen",
            "Vorkasse ist uns nicht möglich, bitte Zahlung {days} Tage nach Rechnung",
        ),
        (
            "eine Bestellung folgt, bitte mit unserer Bestellnummer fakturieren",
            "können wir den Betrag von {amount} in drei Raten zahlen",
            "ist eine Zahlung per Überweisung nach Lieferung möglich",
            "wir brauchen eine Proforma-Rechnung über {amount} für die interne Freigabe",
        ),
        (
            "unser Kreditlimit bei Ihnen muss für diesen Auftrag eventuell erhöht werden",
            "bitte bestätigen Sie die Konditionen schriftlich vor der Freigabe",
            "auf der Rechnung müssen unsere USt-IdNr. und Kostenstelle stehen",
            "bei Aufträgen dieser Größe zahlen wir normalerweise per Akkreditiv",
        ),
    ),
    "service_agreement": (
        (
            "wir brauchen einen Servicevertrag mit {hours} Std. Reaktionszeit vor Ort",
            "bitte bieten Sie einen Supportvertrag mit {hours} Stunden Reaktionszeit an",
            "wir suchen ein SLA mit Austausch am nächsten Arbeitstag",
            "die Anlage braucht {hours}h Support rund um die Uhr",
        ),
        (
            "die Laufzeit soll {years} Jahre ab Installation betragen",
            "wir möchten die Garantie auf {years} Jahre verlängern",
            "bitte {years} Jahre Wartung und Ersatzteile einschließen",
            "der Vertrag soll {years} Jahre laufen, jährlich abgerechnet",
        ),
        (
            "ein fester Ansprechpartner und Quartalsgespräche wären Pflicht",
            "unsere Prüfer brauchen die SLA-Bedingungen und den Eskalationsweg schriftlich",
            "bitte nehmen Sie vorbeugende Wartungsbesuche ins Angebot auf",
            "kann der Vertrag auch die Geräte vom letzten Jahr abdecken",
        ),
    ),
    "volume_discount": (
        (
            "wir planen {qty} Stück zu bestellen und bitten um einen Mengenrabatt",
            "welchen Stückpreis können Sie bei {qty} Einheiten anbieten",
            "bei einer Menge von {qty} erwarten wir einen besseren Preis",
            "wir würden {qty} nehmen, wenn Sie uns einen Staffelpreis geben",
        ),
        (
            "ein Wettbewerber hat uns {pct}% auf den Listenpreis angeboten",
            "wir hoffen auf etwa {pct}% Rabatt auf die Gesamtsumme",
            "bitte schicken Sie ein Angebot mit Staffelpreisen für größere Mengen",
            "unser Budget für den gesamten Rollout liegt bei {amount}",
        ),
        (
            "wir könnten einen Rahmenvertrag für die nächsten zwei Jahre abschließen",
            "weitere Abrufe würden jedes Quartal folgen",
            "der Preis soll für alle Lieferungen in diesem Jahr fest bleiben",
            "bitte nennen Sie uns die Mindestabnahmemenge für den Rabatt",
        ),
    ),
    "delivery_exception": (
        (
            "die Lieferung war für den {date} angekündigt, ist aber nicht angekommen",
            "unsere Lieferung ist verspätet und die Sendungsverfolgung {tracking} steht still",
            "das Paket hängt seit Tagen im Transport fest",
            "der Spediteur meldet eine Verzögerung ohne neues Datum",
        ),
        (
            "zwei Kartons kamen beschädigt an und der Inhalt ist kaputt",
            "es wurden nur {qty} der bestellten Geräte geliefert",
            "die Ware wurde an die falsche Adresse geschickt",
            "die Palette wurde an unserer Rampe abgewiesen, weil die Papiere fehlten",
        ),
        (
            "bitte veranlassen Sie eine neue Zustellung oder eine Ersatzlieferung",
            "wir brauchen so schnell wie möglich einen neuen Liefertermin",
            "bitte eröffnen Sie eine Reklamation beim Spediteur",
            "können Sie das Paket an unser Lager in {site} umleiten",
        ),
    ),
    "returns_rma": (
        (
            "die {product} ist defekt und wir möchten sie zurückgeben",
            "ein Gerät war bei Ankunft defekt und lässt sich nicht einschalten",
            "wir möchten {qty} Geräte zurückschicken, die wir nicht brauchen",
            "das Gerät fällt nach ein paar Minuten aus, bitte eine RMA ausstellen",
        ),
        (
            "bitte schicken Sie uns ein Retourenetikett und eine RMA-Nummer",
            "wie senden wir das fehlerhafte Gerät an Sie zurück",
            "wir bitten um ein Austauschgerät im Rahmen der Garantie",
            "wir erwarten eine Erstattung von {amount} nach Eingang der Rücksendung",
        ),
        (
            "die Seriennummer steht auf dem angehängten Foto",
            "die Diagnose haben wir schon laufen lassen, Fehlercode {rma}",
            "die Originalverpackung ist noch vorhanden",
            "die Rückgabefrist ist noch nicht abgelaufen",
        ),
    ),
    "fraud_review": (
        (
            "die Risikoprüfung hat diesen Auftrag zur Kontrolle markiert",
            "dieser Auftrag wurde von der Betrugsprüfung angehalten",
            "Rechnungs- und Lieferadresse liegen in verschiedenen Ländern",
            "die Karte wurde in {country} ausgegeben, die Lieferung geht woanders hin",
        ),
        (
            "das Konto wurde heute angelegt und der Bestellwert beträgt {amount}",
            "mehrere Bestellungen mit verschiedenen Karten kamen vom selben Gerät",
            "die E-Mail-Domain wirkt wegwerfbar und die Telefonnummer ist ungültig",
            "der Kunde wünscht Expressversand an eine Weiterleitungsadresse",
        ),
        (
            "bitte prüfen Sie die Identität des Kunden vor der Freigabe",
            "ein Analyst soll den Kunden anrufen und den Auftrag bestätigen",
            "bitte entscheiden, ob der Auftrag freigegeben oder storniert wird",
            "unsere Zahlung wurde zweimal abgelehnt, warum wird nicht versendet",
        ),
    ),
}

MENTION = {
    "hardware_config": (
        "die Server haben die Standardkonfiguration",
        "die Ausstattung ist wie beim letzten Mal",
    ),
    "installation": (
        "die Installation machen wir selbst",
        "unsere eigene IT übernimmt die Einrichtung",
    ),
    "payment_terms": (
        "Zahlung wie immer per Überweisung",
        "die Rechnung geht an unsere Kreditorenbuchhaltung",
    ),
    "service_agreement": (
        "die Geräte sind über unseren bestehenden Supportvertrag abgedeckt",
        "es gilt die Standardgarantie",
    ),
    "volume_discount": (
        "den angebotenen Preis akzeptieren wir",
        "die Preise sind mit Ihrem Vertrieb abgestimmt",
    ),
    "delivery_exception": (
        "Lieferung bitte an die übliche Adresse",
        "die letzte Lieferung kam ohne Probleme an",
    ),
    "returns_rma": (
        "aus der letzten Bestellung gibt es keine Rücksendungen",
        "die Altgeräte entsorgen wir selbst",
    ),
    "fraud_review": (
        "wir sind seit Jahren Ihr Kunde",
        "unsere Kontodaten sind unverändert",
    ),
}

GREETING = (
    "Hallo",
    "Guten Tag",
    "Sehr geehrte Damen und Herren",
    "Moin",
    "Hallo zusammen",
    "",
)
CLOSING = (
    "Danke, {name}",
    "Mit freundlichen Grüßen, {name}",
    "Viele Grüße, {name} ({company})",
    "Vielen Dank im Voraus",
    "Beste Grüße {name}",
    "",
)
FACTS = (
    "Auftrag {order}: {qty} x {sku} ({product}), Summe {amount}.",
    "Es geht um Auftrag {order} ({qty} x {sku}, {amount}).",
    "Ref. {order} - {product}, Menge {qty}, Wert {amount}.",
    "Wir haben {qty} Stk. {sku} für {amount} bestellt.",
)
URGENCY = {
    "urgent": (
        "DRINGEND: die Produktion steht, bis das gelöst ist",
        "das blockiert unseren Go-live morgen, bitte sofort handeln",
        "kritisch - bitte rufen Sie mich heute noch an",
    ),
    "high": (
        "wir brauchen eine Lösung bis {date}",
        "bitte mit Priorität behandeln",
        "unsere Projektfrist ist nächste Woche",
    ),
    "normal": (
        "bitte melden Sie sich, wenn Sie können",
        "teilen Sie uns die nächsten Schritte mit",
    ),
    "low": ("keine Eile", "wann immer es passt", "nur zur Planung"),
}
PRODUCTS = {
    "server": ("2HE-Rackserver", "1HE-Rechenknoten", "GPU-Server"),
    "storage": ("Speichersystem", "NAS-Appliance", "Festplattenerweiterung"),
    "network": ("48-Port-Switch", "Firewall-Appliance", "WLAN-Controller"),
    "client": ("Business-Laptop", "Workstation", "Dockingstation"),
}
